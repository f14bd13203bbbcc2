// The GEMM of the CPU kernels: one side packed once per call into column
// panels, multiplied in register tiles (gemm_tiles.h), AVX-512 where the CPU
// has it. It runs the per-step products of the time loops (a few rows of h
// or dG against a weight reused every step) and the products over all steps
// (linear_cpu, gemm_tn). On AMD CPUs MKL's GEMM runs AVX2 code at well under
// half of these tiles' rate (bench.probe gemm measures both).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <vector>

#include "../thread_scope.h"
#include "gemm_tiles.h"

namespace rnnkernels {

// Whether the panel GEMM runs for this dtype on this CPU: float or double,
// AVX2 + FMA, and RNNKERNELS_CPU_GEMM not set to "aten" (which sends every
// product to ATen, for comparison); bfloat16 products (BFloat16Products) need
// the AVX-512 tiles (not RNNKERNELS_CPU_GEMM=avx2), avx512_bf16, and a CPU
// where it pays (cpu_bf16_dot_pays; RNNKERNELS_CPU_GEMM=bf16 takes them anyway).
bool panel_gemm_enabled(at::ScalarType dtype);

// While one is alive on a thread, the float products that thread sets up
// (packs their panels) round both operands to bfloat16 and sum in float, at
// twice the float rate: a bfloat16 call runs its time loops in float on
// these products. Without avx512_bf16 (or with the panel GEMM off) products
// stay in float.
class BFloat16Products : public ThreadScope<BFloat16Products> {
 public:
  // Whether one is alive here and the CPU runs bfloat16 products.
  static bool active();
};

// Bytes of b's panels packed now on this thread, padding aside (0 for an
// undefined b): two a value for float products under BFloat16Products.
// What a time loop weighs when it picks how to split (StepSplit).
template <typename T>
int64_t panel_bytes(const at::Tensor& b) {
  if (!b.defined()) return 0;
  const bool bf16 = std::is_same_v<T, float> && BFloat16Products::active();
  return b.numel() * (bf16 ? 2 : static_cast<int64_t>(sizeof(T)));
}

// Column granularity of a thread's share of a product: one panel.
template <typename T>
constexpr int64_t kStepColumns = kPanelWidth<T>;

// B (K, N) of products A @ B, packed into zero-padded column panels
// (gemm_tiles.h), T float, double or bfloat16.
template <typename T>
class PanelMatrix {
 public:
  // B(k, n) = b[k * sk + n * sn]; for bfloat16 panels, a float b (rounded)
  // or a bfloat16 one. Packed now, between ATen's threads, or with `later`
  // by pack(), while b lives.
  template <typename S>
  PanelMatrix(const S* b, int64_t K, int64_t N, int64_t sk, int64_t sn, bool later = false);

  int64_t count() const { return count_; }
  int64_t depth() const { return K_; }
  // Panels [p0, p1) of a matrix made `later`, on the calling thread.
  void pack(int64_t p0, int64_t p1) const { pack_(p0, p1); }

  // Columns [p0, p1) * panel width (clipped to N) of c = init + a @ B on the
  // calling thread, for c (M, N) and a (M, K) of row strides ldc and lda, and
  // init a row of N added to every row (a bias) or null. For bfloat16, K is
  // rounded up to even with a zero depth in a.
  void multiply_panels(int64_t M, const T* a, int64_t lda, acc_t<T>* c, int64_t ldc, int64_t p0,
                       int64_t p1, const acc_t<T>* init = nullptr) const;

  // All of c = a @ B, the panels split between ATen's threads: the products
  // over all steps.
  void multiply(int64_t M, const T* a, int64_t lda, acc_t<T>* c, int64_t ldc) const;

 private:
  at::Tensor panels_;
  const T* data_;  // panels_'s data, read without ATen calls inside a team
  int64_t K_, N_, count_;
  std::function<void(int64_t, int64_t)> pack_;
};

// A weight multiplied every step of one call: packed once into panels, or
// kept for at::mm where the panel GEMM is not enabled. Threads of a step
// each compute their own columns of the product.
template <typename T>
class StepMatrix {
 public:
  explicit StepMatrix(const at::Tensor& b, bool later = false);  // (K, N), any strides

  // One for each of bs, their panels packed in one parallel region. A region
  // a weight left the threads waiting between them: T10 B32 H512 inference
  // packs eight (four parts each of w_ih and w_hh), which took about 0.5 ms
  // of a 3.5 to 4 ms call that way and 0.3 ms this way.
  static std::vector<StepMatrix> together(at::TensorList bs);

  // Whether products run on the packed panels. Otherwise they call at::mm,
  // which must not run inside a team: the team's threads lack the caller's
  // dispatcher state, and an exception there could not reach the caller.
  bool packed() const { return packed_.has_value() || bf16_.has_value(); }

  // Columns [n0, n1) of c = init + a @ B for a (M, K), c (M, N), contiguous
  // rows of stride lda and ldc, and init a row of N added to every row (a
  // bias) or null. n0 and n1 must be multiples of kStepColumns<T> (n1 may
  // also be N). Under BFloat16Products a is rounded into a thread_local
  // buffer, which may allocate: the time loops' teams round their rows into
  // buffers allocated before the team and call the overload below.
  void multiply(int64_t M, const T* a, int64_t lda, T* c, int64_t ldc, int64_t n0, int64_t n1,
                const T* init = nullptr) const;

  // The same for a already rounded to bfloat16 (rows_to_bf16; rows of stride
  // lda, padded to an even K), so that several products share one rounding.
  // Only for a matrix packed under BFloat16Products.
  void multiply(int64_t M, const c10::BFloat16* a, int64_t lda, T* c, int64_t ldc, int64_t n0,
                int64_t n1, const T* init = nullptr) const;

 private:
  at::Tensor b_;
  std::optional<PanelMatrix<T>> packed_;
  std::optional<PanelMatrix<c10::BFloat16>> bf16_;  // float products in bfloat16
};

// c = w @ b (+ a bias column) with the weight as A, read in its own
// row-major layout: nothing to pack. A short call whose batch fills whole
// panels runs its forward products this way round
// (lstm_forward_unit_major.cpp), on states and inputs kept unit-major
// ((units, B), a sample's values B apart), so that it transposes its inputs
// instead of packing its weights: on a Zen 5 one core ran w_hh (2048, 1024)
// by h^T (1024, 32) at 263 GFLOP/s, against 229 for h @ w_hh^T on panels
// packed once for ten steps and 134 for one.
template <typename T>
struct WeightRowsProduct {
  int64_t M, K;     // rows of w multiplied, depth
  const T* w;       // (M, K), row stride ldw
  int64_t ldw;      //
  const T* b;       // (K, N), row stride ldb
  int64_t ldb, N;   // N a multiple of kPanelWidth<T>
  T* c;             // (M, N), row stride ldc
  int64_t ldc;      //
  const T* bias;    // (M) added to every column of a row, or null
  int64_t blocks;   // products against b + s * b_block into c + s * c_block for
  int64_t b_block;  // s < blocks, each row block of w read once for all of
  int64_t c_block;  // them (the input projections of several steps)
};

// On the calling thread; only for float or double where
// panel_gemm_enabled.
template <typename T>
void multiply_weight_rows(const WeightRowsProduct<T>& p);

// a^T @ b for a (K, M) and each b (K, N) of bs: the weight gradients over
// all steps (dG^T @ x, dG^T @ h), a transposed once for all of them, each b
// packed into panels. Falls back to at::mm where the panels do not run.
std::vector<at::Tensor> gemm_tn(const at::Tensor& a, at::TensorList bs);

// The rows of a float x (M, K) rounded to bfloat16, each padded with a zero
// to an even depth: the rounded A of bfloat16 products over all steps, in a
// recycled buffer (a bfloat16 x is such rows already, or copied into them).
// Only where panel_gemm_enabled(at::kBFloat16).
at::Tensor bf16_rows(const at::Tensor& x);

// x @ w^T over all steps, into a recycled buffer (workspace.h): dx = dG @
// w_ih. w may have any strides.
at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& w);

// a @ b for 2-D CPU tensors through StepMatrix, its panels split between
// threads as the time loops split them: what tests and benchmarks call.
// bfloat16 operands give a float product, as the op's bfloat16 calls run.
// With repeats > 1 the same product is computed that many times from one
// packing, as a time loop does.
at::Tensor step_matmul(const at::Tensor& a, const at::Tensor& b, int64_t repeats = 1);

}  // namespace rnnkernels

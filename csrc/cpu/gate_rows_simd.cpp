// The gate rows on AVX2 vectors. This file alone is compiled for AVX2 + FMA
// (the pragma below, as ATen compiles its own per-capability kernels); the
// entry points check the CPU at run time and use scalars without AVX2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
// What -mavx2 -mfma would define; sleef.h and ATen key their AVX2 code on it.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNKERNELS_SIMD 1
// ATen's headers return vectors from functions declared before the pragma
// could matter; the ABI note does not concern this file's callers.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <ATen/cpu/vec/vec.h>

#include "gate_rows.h"

namespace rnnkernels {

#ifdef RNNKERNELS_SIMD
// Sleef on whole vectors: the 1-ulp exp through ATen's Vectorized, and the
// 3.5-ulp tanh, which takes 1.1 ns per float here against 2.7 ns for the
// 1-ulp one ATen's tanh() calls; tanh is most of a gate pass's time.
template <typename T>
struct MathFns<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V exp(V x) { return x.exp(); }
  static V tanh(V x);
};
template <>
inline at::vec::Vectorized<float> MathFns<at::vec::Vectorized<float>>::tanh(V x) {
  return V(Sleef_finz_tanhf8_u35avx2(x));
}
template <>
inline at::vec::Vectorized<double> MathFns<at::vec::Vectorized<double>>::tanh(V x) {
  return V(Sleef_finz_tanhd4_u35avx2(x));
}

template <typename T>
struct SimdLanes {
  using V = at::vec::Vectorized<T>;
  static constexpr int64_t size = V::size();
  static V load(const T* p) { return V::loadu(p); }
  static void store(V v, T* p) { v.store(p); }
};

static bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

template <typename T>
static void forward_row_impl(const ForwardRow<T>& w, int64_t j, int64_t j1, int64_t H) {
#ifdef RNNKERNELS_SIMD
  if (cpu_has_avx2()) j = forward_span<SimdLanes<T>>(w, j, j1, H);
#endif
  forward_span<ScalarLanes<T>>(w, j, j1, H);
}

template <typename T>
static void backward_row_impl(const BackwardRow<T>& w, int64_t j, int64_t j1, int64_t H) {
#ifdef RNNKERNELS_SIMD
  if (cpu_has_avx2()) j = backward_span<SimdLanes<T>>(w, j, j1, H);
#endif
  backward_span<ScalarLanes<T>>(w, j, j1, H);
}

void forward_row(const ForwardRow<float>& w, int64_t j0, int64_t j1, int64_t H) { forward_row_impl(w, j0, j1, H); }
void forward_row(const ForwardRow<double>& w, int64_t j0, int64_t j1, int64_t H) { forward_row_impl(w, j0, j1, H); }
void backward_row(const BackwardRow<float>& w, int64_t j0, int64_t j1, int64_t H) { backward_row_impl(w, j0, j1, H); }
void backward_row(const BackwardRow<double>& w, int64_t j0, int64_t j1, int64_t H) { backward_row_impl(w, j0, j1, H); }

}  // namespace rnnkernels

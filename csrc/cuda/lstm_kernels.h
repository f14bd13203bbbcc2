// Host launchers of the CUDA kernels, in plain C++ types so that the
// at::Tensor glue (lstm_cuda.cpp) can call them without seeing device code.
//
// Rows follow the packed time walk of csrc/lstm_math.h: the samples running
// at time t are 0 .. nb-1, at rows row0 .. row0+nb-1; gates in nn.LSTM's
// order i, f, g, o; H the cell size, P the size of h (proj_size or H).
// Storage tensors have the call's dtype; the cell state, its gradient and
// the recurrent product of the forward are in the accumulation type (float
// for the half types). Every pointer is to device memory, contiguous unless
// a leading dimension says otherwise. Every launcher returns the launch's
// error (cudaSuccess when there was nothing to do) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

namespace rnnkernels {
namespace cuda {

enum class DType { kFloat, kDouble, kHalf, kBFloat16 };

// Step t of one layer-direction and how it meets the step before it.
struct Step {
  int64_t B, H, P;     // largest batch, cell size, size of h
  int64_t t, nb;       // time and samples running
  int64_t row0;        // first row of the step
  int64_t prev_row0;   // first row of the step processed before it (read
                       // only for samples that ran it)
  int64_t batch_next;  // batch size of time t + 1, 0 past the end
  bool reverse;
  int64_t window;
  const bool* reset;  // (T, B), or null
};

// --- per-step kernels --------------------------------------------------------

// The fused forward pass of one step: pre-activations G + R (R ignored for a
// sample whose state is reset before the step), the cell update, and h (or,
// with a projection, r = o * tanh(c)).
struct ForwardGateArgs {
  Step s;
  void* G;        // (rows, 4H): pre-activations in; the gates out with cells
  const void* R;  // (B, 4H) accumulation type: h @ w_hh^T
  void* c;        // (B, H) accumulation type, in/out
  void* h;        // (B, H): new h, or r before a projection
  void* y;        // (rows, ldy): outputs, or null with a projection
  int64_t ldy;
  void* cells;  // (rows, H) accumulation type, or null: nothing is saved
};
cudaError_t forward_gates(DType dt, const ForwardGateArgs& a, cudaStream_t stream);

// Backward, one step: dh += grad_y; dh_all = dh (with a projection); h_prev =
// the h the step multiplied w_hh by (zero after a reset).
struct StepRowsArgs {
  Step s;
  const void* grad_y;  // (rows, ld_gy), or null
  int64_t ld_gy;
  const void* h0;  // (B, P)
  const void* y;   // (rows, ldy): the forward's outputs
  int64_t ldy;
  void* dh;      // (B, P) in/out
  void* dh_all;  // (rows, P), or null
  void* h_prev;  // (rows, P)
};
cudaError_t backward_step_rows(DType dt, const StepRowsArgs& a, cudaStream_t stream);

// The fused backward pass of one step: dG, the dc carry (cut by window and
// reset) and, with a projection, r_all = o * tanh(c).
struct BackwardGateArgs {
  Step s;
  const void* c0;     // (B, H) accumulation type
  const void* gates;  // (rows, 4H)
  const void* cells;  // (rows, H) accumulation type
  const void* dh;     // (B, P), read when dr is null
  const void* dr;     // (B, H): dh @ w_hr, or null without a projection
  void* dc;           // (B, H) accumulation type, in/out
  void* dG;           // (rows, 4H)
  void* r_all;        // (rows, H), or null
};
cudaError_t backward_gates(DType dt, const BackwardGateArgs& a, cudaStream_t stream);

// dh[b] = 0 where no gradient crosses from this step into the one before it.
cudaError_t cut_rows(DType dt, const Step& s, void* dh, cudaStream_t stream);

// --- persistent recurrent kernels ---------------------------------------------
//
// One cooperative launch runs the whole sequence: each block keeps its slice
// of w_hh in shared memory and owns a range of hidden units; steps are
// separated by a grid-wide barrier. Only without a projection and for
// B <= kPersistentMaxBatch, whose lengths travel in the launch's arguments.

constexpr int kPersistentMaxBatch = 16;

struct Lengths {
  int64_t len[kPersistentMaxBatch];  // steps of each sample, non-increasing
};

struct PersistentPlan {
  bool fits;
  const char* why;  // reason when it does not fit
  int blocks;       // grid size (one block per SM at most)
  int units;        // hidden units per block
  int max_batch;    // compile-time batch bound of the chosen instantiation
  size_t smem;      // dynamic shared memory per block
};

// Whether (and how) the persistent kernel runs this problem on the current
// device; `backward` picks the backward kernel's requirements.
PersistentPlan persistent_plan(DType dt, int64_t B, int64_t H, bool proj, bool backward);

struct PersistentForwardArgs {
  int64_t T, B, H;
  Lengths lens;
  bool reverse;
  const bool* reset;  // (T, B), or null
  void* G;            // (rows, 4H): gates out with cells
  const void* w_hh;   // (4H, H)
  void* hbuf;         // (2, B, H): h0 in both halves on entry
  void* h_n;          // (B, H): each sample's last h
  void* c;            // (B, H) accumulation type: c0 in, last c out
  void* y;            // (rows, ldy)
  int64_t ldy;
  void* cells;  // (rows, H) accumulation type, or null: nothing is saved
};
cudaError_t persistent_forward(DType dt, const PersistentForwardArgs& a, const PersistentPlan& plan,
                               cudaStream_t stream);

struct PersistentBackwardArgs {
  int64_t T, B, H;
  Lengths lens;
  bool reverse;
  int64_t window;
  const bool* reset;
  const void* grad_y;  // (rows, ld_gy), or null
  int64_t ld_gy;
  const void* h0;  // (B, H)
  const void* c0;  // (B, H) accumulation type
  const void* y;   // (rows, ldy)
  int64_t ldy;
  const void* gates;  // (rows, 4H)
  const void* cells;  // (rows, H) accumulation type
  const void* w_hh;   // (4H, H)
  void* dh;           // (B, H): grad of the last h in, of h0 out
  void* dc;           // (B, H) accumulation type, likewise
  void* dG;           // (rows, 4H)
  void* h_prev;       // (rows, H)
};
cudaError_t persistent_backward(DType dt, const PersistentBackwardArgs& a,
                                const PersistentPlan& plan, cudaStream_t stream);

}  // namespace cuda
}  // namespace rnnkernels

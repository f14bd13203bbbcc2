// Host launchers of the CUDA kernels, in plain C++ types so that the
// at::Tensor glue can call them without seeing any device code.
//
// Layouts follow the CPU op: time-major (T, B, ...), gates in nn.LSTM's
// order i, f, g, o, H the cell size, P the size of h (proj_size or H).
// Every pointer is to device memory and contiguous unless said otherwise.
// Every launcher returns the launch's error (cudaSuccess when there was
// nothing to do) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

namespace rnnkernels {
namespace cuda {

// Storage type of every floating tensor of one call; arithmetic runs in fp32
// for the half types and in the storage type otherwise.
enum class DType { kFloat, kDouble, kHalf, kBFloat16 };

struct Dims {
  int64_t T, B, H, P;
};

// How each sample walks time: lens (B, device, sorted decreasing), the
// optional reset mask (T, B), direction and TBPTT window.
struct TimeArgs {
  const int64_t* lens;
  const bool* reset;
  bool reverse;
  int64_t window;
};

// --- per-step kernels of the cuBLAS path -------------------------------------

// The fused forward pass of step s for the first nb samples: reads
// G[t_b, b] (input projection + bias) and R[b] (h @ w_hh^T), updates c and
// writes h (or, with a projection, r = o * tanh(c)); y, gates and cells may be
// null. A sample reset before this step starts from zero state: R and c are
// ignored for it, so h needs no zeroing before the GEMM.
struct ForwardGateArgs {
  Dims d;
  TimeArgs time;
  int64_t s, nb;
  const void* G;  // (T, B, 4H)
  const void* R;  // (B, 4H)
  void* c;        // (B, H) in/out
  void* h_or_r;   // (B, H)
  void* y;        // (T, B, H) or null (with a projection)
  void* gates;    // (T, B, 4H) or null
  void* cells;    // (T, B, H) or null
};
cudaError_t forward_gates(DType dt, const ForwardGateArgs& a,
                          cudaStream_t stream);

// y[t_b, b, :] = h[b, :] for the first nb samples (projected h into y).
cudaError_t copy_rows_to_time(DType dt, Dims d, TimeArgs time, int64_t s,
                              int64_t nb, const void* h, void* y,
                              cudaStream_t stream);

// Backward, step s, first nb samples: dh += grad_y[t_b]; dh_all[t_b] = dh
// (with a projection); h_prev[t_b] = the h that step multiplied w_hh by.
struct StepRowsArgs {
  Dims d;
  TimeArgs time;
  int64_t s, nb;
  const void* grad_y;  // (T, B, P) or null
  const void* h0;      // (B, P)
  const void* y;       // (T, B, P)
  void* dh;            // (B, P) in/out
  void* dh_all;        // (T, B, P) or null
  void* h_prev;        // (T, B, P)
};
cudaError_t backward_step_rows(DType dt, const StepRowsArgs& a,
                               cudaStream_t stream);

// The fused backward pass of step s: dG[t_b], the dc carry (cut by window and
// reset) and, with a projection, r_all[t_b] = o * tanh(c).
struct BackwardGateArgs {
  Dims d;
  TimeArgs time;
  int64_t s, nb;
  const void* c0;         // (B, H)
  const void* gates;      // (T, B, 4H)
  const void* cells;      // (T, B, H)
  const void* dh;         // (B, P), read when dr is null
  const void* dr;         // (B, H): dh @ w_hr, or null without a projection
  void* dc;               // (B, H) in/out
  void* dG;               // (T, B, 4H)
  void* r_all;            // (T, B, H) or null
};
cudaError_t backward_gates(DType dt, const BackwardGateArgs& a,
                           cudaStream_t stream);

// dst[b, :] = dG[t_b, b, :] for the first nb samples (ragged reverse steps).
cudaError_t gather_step_rows(DType dt, Dims d, TimeArgs time, int64_t s,
                             int64_t nb, const void* dG, void* dst,
                             cudaStream_t stream);

// dh[b, :] = 0 where no gradient crosses from step s into s-1 (window or
// reset), for the first nb samples.
cudaError_t cut_rows(DType dt, Dims d, TimeArgs time, int64_t s, int64_t nb,
                     void* dh, cudaStream_t stream);

// --- persistent recurrent kernels ---------------------------------------------
//
// One cooperative launch runs the whole sequence: each block keeps its slice
// of w_hh in shared memory and owns a range of hidden units; steps are
// separated by a grid-wide barrier. Only without a projection and for
// B <= kPersistentMaxBatch.

constexpr int64_t kPersistentMaxBatch = 16;

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
PersistentPlan persistent_plan(DType dt, Dims d, bool proj, bool backward);

// Forward over all T steps. hbuf (2, B, H) holds h0 in its first half on
// entry; h_n and c hold h0 and c0 on entry and the final states on exit.
struct PersistentForwardArgs {
  Dims d;
  TimeArgs time;
  const void* G;     // (T, B, 4H)
  const void* w_hh;  // (4H, H)
  void* hbuf;        // (2, B, H) workspace
  void* h_n;         // (B, H)
  void* c;           // (B, H)
  void* y;           // (T, B, H)
  void* gates;       // (T, B, 4H) or null
  void* cells;       // (T, B, H) or null
};
cudaError_t persistent_forward(DType dt, const PersistentForwardArgs& a,
                               const PersistentPlan& plan,
                               cudaStream_t stream);

// Backward over all T steps: dh, dc hold grad_h_n, grad_c_n on entry and
// dh0, dc0 on exit; dG and h_prev are written for every valid (t, b).
struct PersistentBackwardArgs {
  Dims d;
  TimeArgs time;
  const void* grad_y;  // (T, B, H) or null
  const void* h0;      // (B, H)
  const void* c0;      // (B, H)
  const void* y;       // (T, B, H)
  const void* gates;   // (T, B, 4H)
  const void* cells;   // (T, B, H)
  const void* w_hh;    // (4H, H)
  void* dh;            // (B, H)
  void* dc;            // (B, H)
  void* dG;            // (T, B, 4H)
  void* h_prev;        // (T, B, H)
};
cudaError_t persistent_backward(DType dt, const PersistentBackwardArgs& a,
                                const PersistentPlan& plan,
                                cudaStream_t stream);

}  // namespace cuda
}  // namespace rnnkernels

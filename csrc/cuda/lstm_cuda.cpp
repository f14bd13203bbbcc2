// The CUDA time loops of one layer-direction (see csrc/lstm_stack.h): the
// persistent kernel when it fits, else per step a cuBLAS GEMM through ATen
// on the current stream and the fused kernels of lstm_kernels.h. Nothing
// here copies between host and device: step sizes come from the host's
// batch sizes, and the persistent kernel takes the lengths as arguments.
// Compiled only in CUDA builds.
//
// RNNKERNELS_PERSISTENT=0 never uses the persistent kernel, =1 requires it
// (an error when it cannot run the problem), unset or "auto" uses it when it
// fits and falls back to the per-step path when its launch fails.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "../lstm_math.h"
#include "../lstm_stack.h"
#include "lstm_kernels.h"

namespace rnnkernels {
namespace {

namespace k = ::rnnkernels::cuda;

k::DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return k::DType::kFloat;
    case at::kDouble:
      return k::DType::kDouble;
    case at::kHalf:
      return k::DType::kHalf;
    case at::kBFloat16:
      return k::DType::kBFloat16;
    default:
      TORCH_CHECK(false,
                  "rnnkernels.lstm: CUDA supports float32, float64, float16 and bfloat16, got ", t);
  }
}

enum class PersistentMode { kAuto, kNever, kForce };

PersistentMode persistent_mode() {
  const char* v = std::getenv("RNNKERNELS_PERSISTENT");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return PersistentMode::kAuto;
  if (std::strcmp(v, "0") == 0) return PersistentMode::kNever;
  if (std::strcmp(v, "1") == 0) return PersistentMode::kForce;
  TORCH_CHECK(false, "RNNKERNELS_PERSISTENT must be 0, 1 or auto, got '", v, "'");
}

// The plan when the persistent kernel should run this problem; refuses
// clearly when it must but cannot.
std::optional<k::PersistentPlan> persistent_plan(k::DType dt, int64_t B, int64_t H, bool proj,
                                                 bool backward, PersistentMode mode) {
  if (mode == PersistentMode::kNever) return std::nullopt;
  const k::PersistentPlan plan = k::persistent_plan(dt, B, H, proj, backward);
  if (plan.fits) return plan;
  TORCH_CHECK(mode != PersistentMode::kForce,
              "rnnkernels.lstm: RNNKERNELS_PERSISTENT=1 but the persistent kernel cannot run this "
              "problem: ",
              plan.why);
  return std::nullopt;
}

// Whether a persistent launch ran; a launch that failed in "auto" mode
// leaves the work to the per-step path, unless the failure invalidated a
// CUDA graph capture, which the per-step path could not join.
bool launched(cudaError_t err, PersistentMode mode, cudaStream_t stream) {
  if (err == cudaSuccess) return true;
  if (mode == PersistentMode::kForce) C10_CUDA_CHECK(err);
  (void)cudaGetLastError();  // clear it: the per-step path runs instead
  // The query fails on the legacy default stream while another stream
  // captures; the per-step path could not run there either.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const cudaError_t query = cudaStreamIsCapturing(stream, &capture);
  if (query != cudaSuccess) (void)cudaGetLastError();
  TORCH_CHECK(query == cudaSuccess && capture != cudaStreamCaptureStatusInvalidated,
              "rnnkernels.lstm: the persistent kernel's launch failed (", cudaGetErrorString(err),
              ") and ",
              query == cudaSuccess ? std::string("invalidated the CUDA graph capture")
                                   : std::string("the stream's capture state cannot be read (") +
                                         cudaGetErrorString(query) + ")",
              "; capture with RNNKERNELS_PERSISTENT=0");
  return false;
}

k::Step step_of(const StepRows& steps, int64_t t, bool reverse, int64_t window, const bool* reset,
                int64_t H, int64_t P) {
  const int64_t tp = previous_time(t, reverse);
  const int64_t prev_row0 = tp >= 0 && tp < steps.T() ? steps.offset(tp) : 0;
  return k::Step{
      steps.B(),          H,       P,      t,    steps.batch(t), steps.offset(t), prev_row0,
      steps.batch(t + 1), reverse, window, reset};
}

k::Lengths lengths_of(const StepRows& steps) {
  k::Lengths lens{};
  for (int64_t b = 0; b < steps.B(); ++b) lens.len[b] = steps.length(b);
  return lens;
}

void* ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// out = h @ w in out's dtype: the accumulation type, so that half types
// keep the recurrent term in float32 as the persistent kernel does.
void recurrent_product(at::Tensor& out, const at::Tensor& h, const at::Tensor& w) {
  if (out.scalar_type() == h.scalar_type()) {
    at::mm_out(out, h, w);
  } else {
    at::mm_out(out, h, w, out.scalar_type());
  }
}

bool persistent_forward(const LayerForward& f, const at::Tensor& G, k::DType dt,
                        cudaStream_t stream) {
  const PersistentMode mode = persistent_mode();
  const StepRows& steps = *f.steps;
  const int64_t B = steps.B(), H = f.c.size(1);
  const auto plan = persistent_plan(dt, B, H, f.w_hr.defined(), false, mode);
  if (!plan) return false;
  // Samples join a reverse direction at their own last step and read h0
  // from whichever half the step count points at.
  at::Tensor hbuf = f.h.unsqueeze(0).repeat({2, 1, 1});
  const at::Tensor w = f.w_hh.contiguous();
  const k::PersistentForwardArgs a{steps.T(),
                                   B,
                                   H,
                                   lengths_of(steps),
                                   f.reverse,
                                   f.reset,
                                   G.data_ptr(),
                                   w.data_ptr(),
                                   hbuf.data_ptr(),
                                   f.h.data_ptr(),
                                   f.c.data_ptr(),
                                   f.y.data_ptr(),
                                   f.y.stride(0),
                                   ptr(f.cells)};
  return launched(k::persistent_forward(dt, a, *plan, stream), mode, stream);
}

void forward_steps(const LayerForward& f, const at::Tensor& G, k::DType dt, cudaStream_t stream) {
  const StepRows& steps = *f.steps;
  const int64_t T = steps.T(), B = steps.B(), H = f.c.size(1), P = f.h.size(1);
  const bool proj = f.w_hr.defined();
  at::Tensor R = at::empty({B, 4 * H}, f.c.options());
  at::Tensor r = proj ? at::empty({B, H}, G.options()) : at::Tensor();
  const at::Tensor w_hh_t = f.w_hh.t();
  const at::Tensor w_hr_t = proj ? f.w_hr.t() : at::Tensor();
  for (int64_t i = 0; i < T; ++i) {
    const k::Step s = step_of(steps, f.reverse ? T - 1 - i : i, f.reverse, 0, f.reset, H, P);
    at::Tensor Rn = R.narrow(0, 0, s.nb);
    recurrent_product(Rn, f.h.narrow(0, 0, s.nb), w_hh_t);
    const k::ForwardGateArgs a{s,
                               G.data_ptr(),
                               R.data_ptr(),
                               f.c.data_ptr(),
                               proj ? r.data_ptr() : f.h.data_ptr(),
                               proj ? nullptr : f.y.data_ptr(),
                               f.y.stride(0),
                               ptr(f.cells)};
    C10_CUDA_CHECK(k::forward_gates(dt, a, stream));
    if (proj) {
      at::Tensor hn = f.h.narrow(0, 0, s.nb);
      at::mm_out(hn, r.narrow(0, 0, s.nb), w_hr_t);
      f.y.narrow(0, s.row0, s.nb).copy_(hn);
    }
  }
}

bool persistent_backward(const LayerBackward& b, k::DType dt, cudaStream_t stream) {
  const PersistentMode mode = persistent_mode();
  const StepRows& steps = *b.steps;
  const int64_t B = steps.B(), H = b.dc.size(1);
  const auto plan = persistent_plan(dt, B, H, b.w_hr.defined(), true, mode);
  if (!plan) return false;
  const at::Tensor w = b.w_hh.contiguous();
  const k::PersistentBackwardArgs a{steps.T(),
                                    B,
                                    H,
                                    lengths_of(steps),
                                    b.reverse,
                                    b.window,
                                    b.reset,
                                    ptr(b.grad_y),
                                    b.grad_y.defined() ? b.grad_y.stride(0) : 0,
                                    b.h0.data_ptr(),
                                    b.c0.data_ptr(),
                                    b.y.data_ptr(),
                                    b.y.stride(0),
                                    b.gates.data_ptr(),
                                    b.cells.data_ptr(),
                                    w.data_ptr(),
                                    b.dh.data_ptr(),
                                    b.dc.data_ptr(),
                                    b.dG.data_ptr(),
                                    b.h_prev.data_ptr()};
  return launched(k::persistent_backward(dt, a, *plan, stream), mode, stream);
}

void backward_steps(const LayerBackward& lb, k::DType dt, cudaStream_t stream) {
  const StepRows& steps = *lb.steps;
  const int64_t T = steps.T(), B = steps.B(), H = lb.dc.size(1), P = lb.dh.size(1);
  const bool proj = lb.w_hr.defined();
  at::Tensor dr = proj ? at::empty({B, H}, lb.dh.options()) : at::Tensor();
  const bool cuts = lb.window > 0 || lb.reset != nullptr;
  for (int64_t i = 0; i < T; ++i) {
    const k::Step s =
        step_of(steps, lb.reverse ? i : T - 1 - i, lb.reverse, lb.window, lb.reset, H, P);
    const k::StepRowsArgs rows{s,
                               ptr(lb.grad_y),
                               lb.grad_y.defined() ? lb.grad_y.stride(0) : 0,
                               lb.h0.data_ptr(),
                               lb.y.data_ptr(),
                               lb.y.stride(0),
                               lb.dh.data_ptr(),
                               ptr(lb.dh_all),
                               lb.h_prev.data_ptr()};
    C10_CUDA_CHECK(k::backward_step_rows(dt, rows, stream));
    if (proj) {
      at::Tensor drn = dr.narrow(0, 0, s.nb);
      at::mm_out(drn, lb.dh.narrow(0, 0, s.nb), lb.w_hr);
    }
    const k::BackwardGateArgs g{s,
                                lb.c0.data_ptr(),
                                lb.gates.data_ptr(),
                                lb.cells.data_ptr(),
                                lb.dh.data_ptr(),
                                proj ? dr.data_ptr() : nullptr,
                                lb.dc.data_ptr(),
                                lb.dG.data_ptr(),
                                ptr(lb.r_all)};
    C10_CUDA_CHECK(k::backward_gates(dt, g, stream));
    // The samples of a step are contiguous rows of dG.
    at::Tensor dhn = lb.dh.narrow(0, 0, s.nb);
    at::mm_out(dhn, lb.dG.narrow(0, s.row0, s.nb), lb.w_hh);
    if (cuts) C10_CUDA_CHECK(k::cut_rows(dt, s, lb.dh.data_ptr(), stream));
  }
}

void forward_layer_cuda(const LayerForward& f) {
  const c10::cuda::CUDAGuard guard(f.x.device());
  const k::DType dt = dtype_of(f.x.scalar_type());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The pre-activations of all steps in one GEMM; the gate pass turns them
  // into the gates in place.
  at::Tensor G =
      f.gates.defined() ? f.gates : at::empty({f.x.size(0), f.w_ih.size(0)}, f.x.options());
  if (f.bias.defined()) {
    at::addmm_out(G, f.bias, f.x, f.w_ih.t());
  } else {
    at::mm_out(G, f.x, f.w_ih.t());
  }
  if (!persistent_forward(f, G, dt, stream)) forward_steps(f, G, dt, stream);
}

void backward_layer_cuda(const LayerBackward& b) {
  const c10::cuda::CUDAGuard guard(b.dG.device());
  const k::DType dt = dtype_of(b.dG.scalar_type());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (!persistent_backward(b, dt, stream)) backward_steps(b, dt, stream);
  if (b.dG_sum.defined()) {
    at::Tensor out = b.dG_sum;  // a handle to the caller's buffer
    at::sum_out(out, b.dG, 0);
  }
}

// cuBLAS through ATen, and the caching allocator's buffers.
at::Tensor linear_cuda(const at::Tensor& x, const at::Tensor& w) { return at::mm(x, w.t()); }
std::vector<at::Tensor> weight_grad_cuda(const at::Tensor& a, at::TensorList bs) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& b : bs) out.push_back(at::mm(a.t(), b));
  return out;
}
at::Tensor empty_cuda(at::IntArrayRef shape, const at::TensorOptions& options) {
  return at::empty(shape, options);
}

// A layer's directions one after the other on the current stream.
void forward_layers_cuda(at::ArrayRef<LayerForward> dirs) {
  for (const LayerForward& f : dirs) forward_layer_cuda(f);
}
void backward_layers_cuda(at::ArrayRef<LayerBackward> dirs) {
  for (const LayerBackward& b : dirs) backward_layer_cuda(b);
}

constexpr LayerKernels kCudaKernels{&forward_layers_cuda, &backward_layers_cuda, &linear_cuda,
                                    &weight_grad_cuda, &empty_cuda};

void forward_cuda(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  run_forward(stack, kCudaKernels);
}

void backward_cuda(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  run_backward(stack, kCudaKernels);
}

}  // namespace
}  // namespace rnnkernels

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("lstm_forward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::forward_cuda>());
  m.impl("lstm_backward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::backward_cuda>());
}

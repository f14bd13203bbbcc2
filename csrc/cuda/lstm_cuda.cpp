// CUDA implementations of rnnkernels::lstm_forward and lstm_backward: the
// same algorithm as csrc/cpu, with cuBLAS GEMMs through ATen on the current
// stream and the kernels of lstm_kernels.h, or the persistent kernel when it
// fits. Compiled only in CUDA builds.
//
// RNNKERNELS_PERSISTENT=0 never uses the persistent kernel, =1 requires it
// (an error when it cannot run the problem), unset or "auto" uses it
// whenever it fits.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "../lstm_args.h"
#include "../lstm_setup.h"
#include "../lstm_math.h"
#include "lstm_kernels.h"

namespace rnnkernels {
namespace {

namespace k = ::rnnkernels::cuda;

k::DType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat:
      return k::DType::kFloat;
    case at::kDouble:
      return k::DType::kDouble;
    case at::kHalf:
      return k::DType::kHalf;
    case at::kBFloat16:
      return k::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "rnnkernels.lstm: CUDA supports float32, float64, "
                  "float16 and bfloat16, got ", x.scalar_type());
  }
}

enum class PersistentMode { kAuto, kNever, kForce };

PersistentMode persistent_mode() {
  const char* v = std::getenv("RNNKERNELS_PERSISTENT");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0)
    return PersistentMode::kAuto;
  if (std::strcmp(v, "0") == 0) return PersistentMode::kNever;
  if (std::strcmp(v, "1") == 0) return PersistentMode::kForce;
  TORCH_CHECK(false, "RNNKERNELS_PERSISTENT must be 0, 1 or auto, got '", v,
              "'");
}

std::optional<k::PersistentPlan> choose_persistent(k::DType dt, k::Dims d,
                                                   bool proj, bool backward) {
  const PersistentMode mode = persistent_mode();
  if (mode == PersistentMode::kNever) return std::nullopt;
  const k::PersistentPlan plan = k::persistent_plan(dt, d, proj, backward);
  if (plan.fits) return plan;
  TORCH_CHECK(mode != PersistentMode::kForce,
              "rnnkernels.lstm: RNNKERNELS_PERSISTENT=1 but the persistent "
              "kernel cannot run this problem: ", plan.why);
  return std::nullopt;
}

// Per-sample lengths on the device (the host copy stays with the caller for
// the active-prefix counts) and the reset mask, contiguous.
struct DeviceTime {
  at::Tensor lens;
  at::Tensor reset;
  k::TimeArgs args;
};

DeviceTime device_time(const std::vector<int64_t>& lens,
                       const std::optional<at::Tensor>& reset, bool reverse,
                       int64_t window, const at::Device& device) {
  DeviceTime t;
  at::Tensor host = at::empty({static_cast<int64_t>(lens.size())}, at::kLong);
  if (!lens.empty())
    std::memcpy(host.mutable_data_ptr<int64_t>(), lens.data(),
                lens.size() * sizeof(int64_t));
  t.lens = host.to(device);
  if (reset) t.reset = reset->contiguous();
  t.args = k::TimeArgs{t.lens.const_data_ptr<int64_t>(),
                       reset ? t.reset.const_data_ptr<bool>() : nullptr,
                       reverse, window};
  return t;
}

void* ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void forward_steps(const LstmDims& d, k::DType dt, k::Dims kd,
                   const std::vector<int64_t>& lens, const k::TimeArgs& time,
                   const at::Tensor& G, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& w_hr, at::Tensor& h,
                   at::Tensor& c, at::Tensor& y, const at::Tensor& gates,
                   const at::Tensor& cells, cudaStream_t stream) {
  const int64_t B = d.B, H = d.H;
  at::Tensor R = at::empty({B, 4 * H}, G.options());
  at::Tensor r = d.proj ? at::empty({B, H}, G.options()) : at::Tensor();
  const at::Tensor w_hh_t = w_hh.t();
  const at::Tensor w_hr_t = d.proj ? w_hr->t() : at::Tensor();
  int64_t nb = B;  // samples still running: lengths are sorted decreasing
  for (int64_t s = 0; s < d.T; ++s) {
    while (nb > 0 && lens[nb - 1] <= s) --nb;
    if (nb == 0) break;
    at::Tensor Rn = R.narrow(0, 0, nb);
    at::mm_out(Rn, h.narrow(0, 0, nb), w_hh_t);
    const k::ForwardGateArgs a{kd,
                               time,
                               s,
                               nb,
                               G.const_data_ptr(),
                               R.const_data_ptr(),
                               c.data_ptr(),
                               d.proj ? r.data_ptr() : h.data_ptr(),
                               d.proj ? nullptr : y.data_ptr(),
                               ptr(gates),
                               ptr(cells)};
    C10_CUDA_CHECK(k::forward_gates(dt, a, stream));
    if (d.proj) {
      at::Tensor hn = h.narrow(0, 0, nb);
      at::mm_out(hn, r.narrow(0, 0, nb), w_hr_t);
      C10_CUDA_CHECK(k::copy_rows_to_time(dt, kd, time, s, nb,
                                          h.const_data_ptr(), y.data_ptr(),
                                          stream));
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_forward_cuda(const at::Tensor& x, const at::Tensor& h0,
                  const at::Tensor& c0, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                  const std::optional<at::Tensor>& b_hh,
                  const std::optional<at::Tensor>& w_hr,
                  const std::optional<at::Tensor>& reset,
                  const std::optional<at::Tensor>& lengths, int64_t window,
                  bool reverse, bool need_backward) {
  const LstmDims d = check_forward_args(x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                        w_hr, reset, lengths, window);
  TORCH_CHECK(x.is_cuda(), "rnnkernels.lstm: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(x.device());
  const k::DType dt = dtype_of(x);
  const std::vector<int64_t> lens = lengths_vector(d, lengths);
  const auto opts = x.options();
  ForwardSetup f = setup_forward(d, x, h0, c0, w_ih, b_ih, b_hh,
                                 lengths.has_value(), need_backward,
                                 /*gates_in_G=*/false);
  at::Tensor &G = f.G, &y = f.y, &gates = f.gates, &cells = f.cells, &h = f.h,
             &c = f.c;
  if (d.T == 0 || d.B == 0) return {y, h, c, gates, cells};

  const DeviceTime time = device_time(lens, reset, reverse, window, x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const k::Dims kd{d.T, d.B, d.H, d.P};
  const at::Tensor saved_gates = need_backward ? gates : at::Tensor();
  const at::Tensor saved_cells = need_backward ? cells : at::Tensor();

  if (const auto plan = choose_persistent(dt, kd, d.proj, false)) {
    at::Tensor hbuf = at::empty({2, d.B, d.P}, opts);
    hbuf[0].copy_(h);
    const at::Tensor w = w_hh.contiguous();
    const k::PersistentForwardArgs a{kd,
                                     time.args,
                                     G.const_data_ptr(),
                                     w.const_data_ptr(),
                                     hbuf.data_ptr(),
                                     h.data_ptr(),
                                     c.data_ptr(),
                                     y.data_ptr(),
                                     ptr(saved_gates),
                                     ptr(saved_cells)};
    C10_CUDA_CHECK(k::persistent_forward(dt, a, *plan, stream));
  } else {
    forward_steps(d, dt, kd, lens, time.args, G, w_hh, w_hr, h, c, y,
                  saved_gates, saved_cells, stream);
  }
  return {y, h, c, gates, cells};
}

// The shared backward buffers plus the inputs the kernels read, contiguous.
struct BackwardState : BackwardSetup {
  at::Tensor gy, h0, c0, y, gates, cells;
};

void backward_steps(const LstmDims& d, k::DType dt, k::Dims kd,
                    const std::vector<int64_t>& lens, const k::TimeArgs& time,
                    const at::Tensor& w_hh,
                    const std::optional<at::Tensor>& w_hr, BackwardState& st,
                    cudaStream_t stream) {
  const int64_t T = d.T, B = d.B, H = d.H;
  // Reverse directions with ragged lengths read a different time per sample,
  // so their rows of dG for one step must be gathered before the GEMM.
  const bool ragged = time.reverse && lens.front() != lens.back();
  at::Tensor gathered =
      ragged ? at::empty({B, 4 * H}, st.dG.options()) : at::Tensor();
  at::Tensor dr = d.proj ? at::empty({B, H}, st.dG.options()) : at::Tensor();
  const bool cuts = time.window > 0 || time.reset != nullptr;
  int64_t nb = 0;
  for (int64_t s = T - 1; s >= 0; --s) {
    while (nb < B && lens[nb] > s) ++nb;
    if (nb == 0) continue;
    const k::StepRowsArgs rows{kd,           time,
                               s,            nb,
                               ptr(st.gy),   st.h0.const_data_ptr(),
                               st.y.const_data_ptr(), st.dh.data_ptr(),
                               ptr(st.dh_all), st.h_prev.data_ptr()};
    C10_CUDA_CHECK(k::backward_step_rows(dt, rows, stream));
    if (d.proj) {
      at::Tensor drn = dr.narrow(0, 0, nb);
      at::mm_out(drn, st.dh.narrow(0, 0, nb), *w_hr);
    }
    const k::BackwardGateArgs g{kd,
                                time,
                                s,
                                nb,
                                st.c0.const_data_ptr(),
                                st.gates.const_data_ptr(),
                                st.cells.const_data_ptr(),
                                st.dh.const_data_ptr(),
                                d.proj ? dr.const_data_ptr() : nullptr,
                                st.dc.data_ptr(),
                                st.dG.data_ptr(),
                                ptr(st.r_all)};
    C10_CUDA_CHECK(k::backward_gates(dt, g, stream));

    at::Tensor dG_step;
    if (ragged) {
      C10_CUDA_CHECK(k::gather_step_rows(dt, kd, time, s, nb,
                                         st.dG.const_data_ptr(),
                                         gathered.data_ptr(), stream));
      dG_step = gathered.narrow(0, 0, nb);
    } else {
      // Every running sample is at the same time index.
      dG_step = st.dG[step_time(s, lens[0], time.reverse)].narrow(0, 0, nb);
    }
    at::Tensor dhn = st.dh.narrow(0, 0, nb);
    at::mm_out(dhn, dG_step, w_hh);
    if (cuts)
      C10_CUDA_CHECK(k::cut_rows(dt, kd, time, s, nb, st.dh.data_ptr(), stream));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
lstm_backward_cuda(const std::optional<at::Tensor>& grad_y,
                   const std::optional<at::Tensor>& grad_hn,
                   const std::optional<at::Tensor>& grad_cn,
                   const at::Tensor& x, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih,
                   const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& w_hr,
                   const std::optional<at::Tensor>& reset,
                   const std::optional<at::Tensor>& lengths,
                   const at::Tensor& y, const at::Tensor& gates,
                   const at::Tensor& cells, int64_t window, bool reverse,
                   bool need_dx, bool need_bias) {
  const LstmDims d =
      check_forward_args(x, h0, c0, w_ih, w_hh, std::nullopt, std::nullopt,
                         w_hr, reset, lengths, window);
  check_backward_args(d, x, grad_y, grad_hn, grad_cn, y, gates, cells);
  TORCH_CHECK(x.is_cuda(), "rnnkernels.lstm: expected CUDA tensors");
  const c10::cuda::CUDAGuard guard(x.device());
  const k::DType dt = dtype_of(x);
  const std::vector<int64_t> lens = lengths_vector(d, lengths);
  const int64_t T = d.T, B = d.B, H = d.H, P = d.P;
  BackwardState st{setup_backward(d, x, grad_hn, grad_cn, lengths.has_value())};
  st.gy = grad_y ? grad_y->contiguous() : at::Tensor();
  st.h0 = h0.contiguous();
  st.c0 = c0.contiguous();
  st.y = y.contiguous();
  st.gates = gates.contiguous();
  st.cells = cells.contiguous();

  if (T > 0 && B > 0) {
    const DeviceTime time =
        device_time(lens, reset, reverse, window, x.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const k::Dims kd{T, B, H, P};
    if (const auto plan = choose_persistent(dt, kd, d.proj, true)) {
      const at::Tensor w = w_hh.contiguous();
      const k::PersistentBackwardArgs a{kd,
                                        time.args,
                                        ptr(st.gy),
                                        st.h0.const_data_ptr(),
                                        st.c0.const_data_ptr(),
                                        st.y.const_data_ptr(),
                                        st.gates.const_data_ptr(),
                                        st.cells.const_data_ptr(),
                                        w.const_data_ptr(),
                                        st.dh.data_ptr(),
                                        st.dc.data_ptr(),
                                        st.dG.data_ptr(),
                                        st.h_prev.data_ptr()};
      C10_CUDA_CHECK(k::persistent_backward(dt, a, *plan, stream));
    } else {
      backward_steps(d, dt, kd, lens, time.args, w_hh, w_hr, st, stream);
    }
  }

  return finish_backward(d, x, w_ih, st, need_dx, need_bias);
}

}  // namespace
}  // namespace rnnkernels

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("lstm_forward", &rnnkernels::lstm_forward_cuda);
  m.impl("lstm_backward", &rnnkernels::lstm_backward_cuda);
}

#include "lstm_setup.h"

namespace rnnkernels {

ForwardSetup setup_forward(const LstmDims& d, const at::Tensor& x,
                           const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih,
                           const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh, bool padded,
                           bool need_backward, bool gates_in_G) {
  const auto opts = x.options();
  ForwardSetup s;
  const at::Tensor x2 = x.reshape({d.T * d.B, d.I});
  const at::Tensor bias = combined_bias(b_ih, b_hh);
  s.G = (bias.defined() ? at::addmm(bias, x2, w_ih.t()) : at::mm(x2, w_ih.t()))
            .view({d.T, d.B, 4 * d.H});
  // Padding positions are never written by the steps, so they start at zero.
  auto alloc = [&](at::IntArrayRef shape) {
    return padded ? at::zeros(shape, opts) : at::empty(shape, opts);
  };
  s.y = alloc({d.T, d.B, d.P});
  if (!need_backward) {
    s.gates = at::empty({0}, opts);
  } else if (gates_in_G && !padded) {
    s.gates = s.G;
  } else {
    s.gates = alloc({d.T, d.B, 4 * d.H});
  }
  s.cells = need_backward ? alloc({d.T, d.B, d.H}) : at::empty({0}, opts);
  s.h = h0.contiguous().clone();
  s.c = c0.contiguous().clone();
  return s;
}

BackwardSetup setup_backward(const LstmDims& d, const at::Tensor& x,
                             const std::optional<at::Tensor>& grad_hn,
                             const std::optional<at::Tensor>& grad_cn,
                             bool padded) {
  const auto opts = x.options();
  // Padding positions are skipped by the steps and must add nothing to the
  // weight gradients, so they start at zero.
  auto alloc = [&](at::IntArrayRef shape) {
    return padded ? at::zeros(shape, opts) : at::empty(shape, opts);
  };
  BackwardSetup s;
  s.dG = alloc({d.T, d.B, 4 * d.H});
  s.h_prev = alloc({d.T, d.B, d.P});
  if (d.proj) {
    s.dh_all = alloc({d.T, d.B, d.P});
    s.r_all = alloc({d.T, d.B, d.H});
  }
  s.dh = grad_hn ? grad_hn->contiguous().clone() : at::zeros({d.B, d.P}, opts);
  s.dc = grad_cn ? grad_cn->contiguous().clone() : at::zeros({d.B, d.H}, opts);
  return s;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
finish_backward(const LstmDims& d, const at::Tensor& x, const at::Tensor& w_ih,
                const BackwardSetup& s, bool need_dx, bool need_bias) {
  const auto opts = x.options();
  const int64_t TB = d.T * d.B;
  const at::Tensor dG2 = s.dG.view({TB, 4 * d.H});
  const at::Tensor dx = need_dx ? at::mm(dG2, w_ih).view({d.T, d.B, d.I})
                                : at::empty({0}, opts);
  const at::Tensor dw_ih = at::mm(dG2.t(), x.reshape({TB, d.I}));
  const at::Tensor dw_hh = at::mm(dG2.t(), s.h_prev.view({TB, d.P}));
  const at::Tensor db = need_bias ? dG2.sum(0) : at::empty({0}, opts);
  const at::Tensor dw_hr =
      d.proj ? at::mm(s.dh_all.view({TB, d.P}).t(), s.r_all.view({TB, d.H}))
             : at::empty({0}, opts);
  return {dx, s.dh, s.dc, dw_ih, dw_hh, db, dw_hr};
}

}  // namespace rnnkernels

#include "lstm_forward_setup.h"

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

}  // namespace rnnkernels

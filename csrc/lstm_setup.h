// The work around every backend's time loops: before the forward's, the input
// projection of all steps as one GEMM and the output and state buffers;
// before the backward's, its buffers; after it, the gradients that are one
// large GEMM or reduction each over all steps.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "lstm_args.h"

namespace rnnkernels {

// gates_in_G: the backend's gate pass reads each pre-activation of G before it
// writes the activation to the same position, so the saved gates can replace
// G instead of taking a second (T, B, 4H) buffer (not with padding, whose
// positions must read zero).
struct ForwardSetup {
  at::Tensor G;             // x @ w_ih^T + b_ih + b_hh, (T, B, 4H)
  at::Tensor y;             // (T, B, P)
  at::Tensor gates, cells;  // saved for backward, or empty
  at::Tensor h, c;          // running state, starting as copies of h0, c0
};

ForwardSetup setup_forward(const LstmDims& d, const at::Tensor& x,
                           const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih,
                           const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh, bool padded,
                           bool need_backward, bool gates_in_G);

struct BackwardSetup {
  at::Tensor dG;            // pre-activation gradients, (T, B, 4H)
  at::Tensor h_prev;        // the h each step multiplied w_hh by, (T, B, P)
  at::Tensor dh_all, r_all; // with a projection: total dL/dy_t and o * tanh(c)
  at::Tensor dh, dc;        // carried gradients, starting from grad_hn, grad_cn
};

BackwardSetup setup_backward(const LstmDims& d, const at::Tensor& x,
                             const std::optional<at::Tensor>& grad_hn,
                             const std::optional<at::Tensor>& grad_cn,
                             bool padded);

// dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr from the filled-in buffers.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
finish_backward(const LstmDims& d, const at::Tensor& x, const at::Tensor& w_ih,
                const BackwardSetup& s, bool need_dx, bool need_bias);

}  // namespace rnnkernels

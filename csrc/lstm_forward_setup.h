// What every backend's forward does before its time loop: the input
// projection of all steps as one GEMM, and the outputs and state buffers.
#pragma once

#include <ATen/ATen.h>

#include <optional>

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

}  // namespace rnnkernels

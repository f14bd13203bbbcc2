// Validation of the fused op's arguments, shared by every backend, so that a
// direct call of torch.ops.rnnkernels.* with bad arguments raises instead of
// reading out of bounds.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace rnnkernels {

struct LstmDims {
  int64_t T, B, I;  // steps, batch, input features
  int64_t H;        // hidden (cell) size
  int64_t P;        // size of h: proj_size, or H without a projection
  bool proj;
};

// Checks shapes, dtypes and devices of lstm_forward's arguments and returns
// the sizes they imply.
LstmDims check_forward_args(const at::Tensor& x, const at::Tensor& h0,
                            const at::Tensor& c0, const at::Tensor& w_ih,
                            const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh,
                            const std::optional<at::Tensor>& w_hr,
                            const std::optional<at::Tensor>& reset,
                            const std::optional<at::Tensor>& lengths,
                            int64_t window);

// Checks the tensors lstm_backward receives on top of the forward arguments.
void check_backward_args(const LstmDims& d, const at::Tensor& x,
                         const std::optional<at::Tensor>& grad_y,
                         const std::optional<at::Tensor>& grad_hn,
                         const std::optional<at::Tensor>& grad_cn,
                         const at::Tensor& y, const at::Tensor& gates,
                         const at::Tensor& cells);

// Per-sample lengths as host integers (all T without a lengths tensor).
std::vector<int64_t> lengths_vector(const LstmDims& d,
                                    const std::optional<at::Tensor>& lengths);

// b_ih + b_hh, either of which may be missing; undefined when both are.
at::Tensor combined_bias(const std::optional<at::Tensor>& b_ih,
                         const std::optional<at::Tensor>& b_hh);

}  // namespace rnnkernels

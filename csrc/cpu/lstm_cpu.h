// CPU forward and backward of one LSTM layer in one direction.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace rnnkernels {

// Returns y (T, B, P), h_n (B, P), c_n (B, H) and, when need_backward, the
// activated gates (T, B, 4H) and cell states (T, B, H) the backward reads
// (empty tensors otherwise).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_forward_cpu(const at::Tensor& x, const at::Tensor& h0,
                 const at::Tensor& c0, const at::Tensor& w_ih,
                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                 const std::optional<at::Tensor>& b_hh,
                 const std::optional<at::Tensor>& w_hr,
                 const std::optional<at::Tensor>& reset,
                 const std::optional<at::Tensor>& lengths, int64_t window,
                 bool reverse, bool need_backward);

// Returns dx, dh0, dc0, dw_ih, dw_hh, db (the gradient of either bias) and
// dw_hr. dx is empty unless need_dx, db unless need_bias, dw_hr without a
// projection.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
lstm_backward_cpu(const std::optional<at::Tensor>& grad_y,
                  const std::optional<at::Tensor>& grad_hn,
                  const std::optional<at::Tensor>& grad_cn,
                  const at::Tensor& x, const at::Tensor& h0,
                  const at::Tensor& c0, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                  const std::optional<at::Tensor>& reset,
                  const std::optional<at::Tensor>& lengths,
                  const at::Tensor& y, const at::Tensor& gates,
                  const at::Tensor& cells, int64_t window, bool reverse,
                  bool need_dx, bool need_bias);

}  // namespace rnnkernels

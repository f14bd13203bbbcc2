// The stack driver: every layer and direction of one op call, written once
// for every backend. A backend supplies the time loops of a layer's
// directions (LayerKernels); the driver does the rest through ATen on
// the tensors' device: the buffers, dropout between layers, and after the
// backward's time loops the gradients that are one large GEMM or reduction
// each over all steps. The input projection is the time loop's own: the CPU
// projects a few steps at a time, so the pre-activations stay in cache.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/stack.h>

#include "lstm_args.h"

namespace rnnkernels {

// The forward time loop of one layer-direction. Rows follow `steps`.
struct LayerForward {
  const StepRows* steps;
  bool reverse;
  const bool* reset;            // (T, B) contiguous on the device, or null
  at::Tensor x;                 // (rows, I): the layer's input
  at::Tensor w_ih, w_hh, w_hr;  // w_hr undefined without a projection
  at::Tensor bias;              // (4H) b_ih + b_hh, or undefined
  at::Tensor gates;             // (rows, 4H) contiguous out: the activated gates,
                                // or undefined (inference)
  at::Tensor h, c;              // (B, P), (B, H) contiguous: initial state in,
                                // each sample's final state out; c in acc_type
  at::Tensor y;                 // (rows, P), rows strided: the outputs (the
                                // last layer's in the input's dtype)
  at::Tensor cells;             // (rows, H) contiguous in acc_type, defined with
                                // gates
};

// The backward time loop of one layer-direction, in the reverse order of its
// forward.
struct LayerBackward {
  const StepRows* steps;
  bool reverse;
  int64_t window;
  const bool* reset;
  at::Tensor gates, cells;  // saved, (rows, 4H) and (rows, H) contiguous
  at::Tensor y;             // the forward's outputs (rows, P), rows strided
  at::Tensor h0, c0;        // (B, P), (B, H) contiguous initial state
  at::Tensor grad_y;        // (rows, P), rows strided (0: one row for all), or undefined
  at::Tensor w_hh, w_hr;
  at::Tensor dh, dc;         // (B, P), (B, H) contiguous: gradients of the
                             // final state in, of the initial state out
                             // (cells, c0 and dc in acc_type)
  at::Tensor dG;             // (rows, 4H) out: pre-activation gradients, in
                             // the input's dtype (a kept bfloat16 input's
                             // products round dG to it anyway)
  at::Tensor dG_sum;         // (4H) out: dG summed over all rows (the bias
                             // gradient), or undefined without biases
  at::Tensor h_prev;         // (rows, P) out: the h each step multiplied
                             // w_hh by (zero after a reset)
  at::Tensor dh_all, r_all;  // with a projection, (rows, P) and (rows, H)
                             // out: dL/dh of each step and o * tanh(c)
};

struct LayerKernels {
  // The time loops of one layer, one entry per direction: the backend may
  // run the directions one after the other or at once.
  void (*forward)(at::ArrayRef<LayerForward>);
  void (*backward)(at::ArrayRef<LayerBackward>);
  // The backend's best GEMMs over all steps: x @ w^T (dx) and a^T @ b for
  // each b (the weight gradients, which share a = dG), and its buffers for
  // the activations and the output (on the CPU, recycled across calls).
  at::Tensor (*linear)(const at::Tensor& x, const at::Tensor& w);
  std::vector<at::Tensor> (*weight_grad)(const at::Tensor& a, at::TensorList bs);
  at::Tensor (*empty)(at::IntArrayRef shape, const at::TensorOptions& options);
};

// The boxed bodies of lstm_forward and lstm_backward on one backend's
// kernels: they pop the op's arguments from the stack and push its results.
void run_forward(torch::jit::Stack* stack, const LayerKernels& kernels);
void run_backward(torch::jit::Stack* stack, const LayerKernels& kernels);

}  // namespace rnnkernels

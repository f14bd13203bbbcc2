// Schemas of the fused ops, their CPU implementations, and the Python module
// rnnkernels._C that loads them and reports how the extension was built.
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#include "cpu/lstm_cpu.h"
#include "cpu/panel_gemm.h"

#ifndef RNNKERNELS_VERSION
#define RNNKERNELS_VERSION "unknown"
#endif

TORCH_LIBRARY(rnnkernels, m) {
  m.def(
      "lstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? reset, "
      "Tensor? lengths, int window, bool reverse, bool need_backward) -> "
      "(Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  m.def(
      "lstm_backward(Tensor? grad_y, Tensor? grad_hn, Tensor? grad_cn, "
      "Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, "
      "Tensor? reset, Tensor? lengths, Tensor y, Tensor gates, Tensor cells, "
      "int window, bool reverse, bool need_dx, bool need_bias) -> "
      "(Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, "
      "Tensor db, Tensor dw_hr)");
}

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_forward", &rnnkernels::lstm_forward_cpu);
  m.impl("lstm_backward", &rnnkernels::lstm_backward_cpu);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnkernels: fused LSTM kernels registered as torch.ops.rnnkernels";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("version") = RNNKERNELS_VERSION;
  m.attr("torch_version") = TORCH_VERSION;
  // The per-step GEMM of the CPU time loops, for tests and bench.gemm_rates.
  m.def("step_matmul", &rnnkernels::step_matmul,
        "a @ b with the per-step GEMM of the CPU kernels, computed `repeats` times from one packing",
        pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("repeats") = 1);
  m.def("panel_gemm_enabled", &rnnkernels::panel_gemm_enabled,
        "whether the packed-panel GEMM runs for this dtype here");
}

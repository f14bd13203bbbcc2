// Schemas of the fused ops, and the Python module rnnkernels._C that loads
// them and reports how the extension was built. Each backend registers its
// kernels in its own folder (csrc/cpu, csrc/cuda).
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#include "cpu/panel_gemm.h"
#include "cpu/workspace.h"
#include "lstm_args.h"

#ifndef RNNKERNELS_VERSION
#define RNNKERNELS_VERSION "unknown"
#endif

TORCH_LIBRARY(rnnkernels, m) {
  // The whole stack (every layer and direction) in one call, as aten::lstm:
  // lstm is the public op; lstm_forward (which can save for backward) and
  // lstm_backward are what its autograd runs (csrc/lstm_autograd.cpp).
  m.def(rnnkernels::kLstmSchema);
  m.def(rnnkernels::kLstmForwardSchema);
  m.def(rnnkernels::kLstmBackwardSchema);
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
  // The per-step GEMM of the CPU time loops, for tests and bench.probe gemm.
  m.def(
      "step_matmul", &rnnkernels::step_matmul,
      "a @ b with the per-step GEMM of the CPU kernels, computed `repeats` times from one packing",
      pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("repeats") = 1);
  m.def(
      "workspace_stats",
      [] {
        const rnnkernels::WorkspaceStats s = rnnkernels::workspace_stats();
        return std::make_tuple(s.in_use, s.cached, s.evictions);
      },
      "(bytes held by tensors, bytes kept for later calls, blocks evicted) of the CPU buffer pool");
  m.def("panel_gemm_enabled", &rnnkernels::panel_gemm_enabled,
        "whether the packed-panel GEMM runs for this dtype here");
}

// The CPU kernels of the stack ops: the shared stack driver on the CPU time
// loops.
#include <torch/library.h>

#include "lstm_cpu.h"

namespace rnnkernels {
namespace {

constexpr LayerKernels kCpuKernels{&forward_layer_cpu, &backward_layer_cpu};

void forward_cpu(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  run_forward(stack, kCpuKernels);
}

void backward_cpu(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  run_backward(stack, kCpuKernels);
}

}  // namespace
}  // namespace rnnkernels

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_forward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::forward_cpu>());
  m.impl("lstm_backward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::backward_cpu>());
}

// The CPU kernels of the stack ops: the shared stack driver on the CPU time
// loops. float16 and bfloat16 run on the float32 kernels: their inputs are
// widened on the way in and the results rounded to the call's dtype on the
// way out, so the cell state and every sum stay in float32 and gradients
// come back in the parameters' dtype. A bfloat16 call's products round their
// operands to bfloat16 (BFloat16Products), as oneDNN's do, at twice the
// float rate where the CPU has avx512_bf16.
#include <torch/library.h>

#include "lstm_cpu.h"
#include "panel_gemm.h"
#include "workspace.h"

namespace rnnkernels {
namespace {

constexpr LayerKernels kCpuKernels{&forward_layer_cpu, &backward_layer_cpu, &linear_cpu, &gemm_tn,
                                   &workspace_empty};

bool narrow_float(const c10::IValue& v) {
  if (!v.isTensor()) return false;
  const at::ScalarType t = v.toTensor().scalar_type();
  return t == at::kHalf || t == at::kBFloat16;
}

std::optional<BFloat16Products> bf16_products(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? std::make_optional<BFloat16Products>() : std::nullopt;
}

// t in dtype, a copy from the workspace: the widened inputs are the
// kernels' own, and a fresh multi-MiB buffer each call is new pages.
at::Tensor cast(const at::Tensor& t, at::ScalarType dtype) {
  if (t.scalar_type() == dtype) return t;
  return workspace_empty(t.sizes(), t.options().dtype(dtype)).copy_(t);
}

// Casts the tensors (and lists of tensors) in stack slots [first, first + n)
// to dtype; `internal` when the casts are the kernels' inputs, not results.
void cast_slots(torch::jit::Stack& s, size_t first, size_t n, at::ScalarType dtype,
                bool internal = true) {
  for (size_t i = first; i < first + n; ++i) {
    if (s[i].isTensor()) {
      s[i] = internal ? cast(s[i].toTensor(), dtype) : s[i].toTensor().to(dtype);
    } else if (s[i].isTensorList()) {
      std::vector<at::Tensor> list = s[i].toTensorVector();
      for (at::Tensor& t : list) t = internal ? cast(t, dtype) : t.to(dtype);
      s[i] = list;
    }
  }
}

void forward_cpu(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  torch::jit::Stack& s = *stack;
  const size_t first = s.size() - (LstmArgs::kCount + 1);
  if (!narrow_float(s[first])) return run_forward(stack, kCpuKernels);
  const at::ScalarType dtype = s[first].toTensor().scalar_type();
  cast_slots(s, first, 4, at::kFloat);  // input, hx, cx, params
  const std::optional<BFloat16Products> products = bf16_products(dtype);
  run_forward(stack, kCpuKernels);
  cast_slots(s, s.size() - 4, 3, dtype, false);  // output, hy, cy; saved stays float
}

void backward_cpu(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  torch::jit::Stack& s = *stack;
  const size_t first = s.size() - (3 + LstmArgs::kCount + 3);
  const size_t input = first + 3;
  if (!narrow_float(s[input])) return run_backward(stack, kCpuKernels);
  const at::ScalarType dtype = s[input].toTensor().scalar_type();
  cast_slots(s, first, 3 + 4, at::kFloat);                 // gradients, input, hx, cx, params
  cast_slots(s, input + LstmArgs::kCount, 1, at::kFloat);  // output
  const std::optional<BFloat16Products> products = bf16_products(dtype);
  run_backward(stack, kCpuKernels);
  cast_slots(s, s.size() - 4, 4, dtype, false);
}

}  // namespace
}  // namespace rnnkernels

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_forward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::forward_cpu>());
  m.impl("lstm_backward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::backward_cpu>());
}

// The CPU kernels of the stack ops: the shared stack driver on the CPU time
// loops. float16 and bfloat16 run on the float32 kernels: their inputs are
// widened on the way in and the results rounded to the call's dtype on the
// way out, so the cell state and every sum stay in float32 and gradients
// come back in the parameters' dtype. A bfloat16 call's products round their
// operands to bfloat16 (BFloat16Products), as oneDNN's do, at twice the
// float rate where the CPU has avx512_bf16, and there its input and weight
// matrices are not widened at all (BFloat16Weights) and its output is
// written rounded by the kernels, so that cast is a no-op.
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

// t in dtype, a copy from the workspace: the widened inputs are the
// kernels' own, and a fresh multi-MiB buffer each call is new pages.
at::Tensor cast(const at::Tensor& t, at::ScalarType dtype) {
  if (t.scalar_type() == dtype) return t;
  return workspace_empty(t.sizes(), t.options().dtype(dtype)).copy_(t);
}

// Casts the tensors (and lists of tensors) in stack slots [first, first + n)
// to dtype; `internal` when the casts are the kernels' inputs, not results.
// With keep_matrices, bfloat16 weight matrices in a list stay as they are
// (BFloat16Weights): their panels are packed from them, and widening them
// first costs a pass over every weight, twice their size, each call.
void cast_slots(torch::jit::Stack& s, size_t first, size_t n, at::ScalarType dtype,
                bool internal = true, bool keep_matrices = false) {
  for (size_t i = first; i < first + n; ++i) {
    if (s[i].isTensor()) {
      s[i] = internal ? cast(s[i].toTensor(), dtype) : s[i].toTensor().to(dtype);
    } else if (s[i].isTensorList()) {
      std::vector<at::Tensor> list = s[i].toTensorVector();
      for (at::Tensor& t : list) {
        if (keep_matrices && t.dim() == 2 && t.scalar_type() == at::kBFloat16) continue;
        t = internal ? cast(t, dtype) : t.to(dtype);
      }
      s[i] = list;
    }
  }
}

// What a narrow-float call runs under: bfloat16 products where the CPU has
// them, and then its input and weight matrices kept in bfloat16.
struct NarrowCall {
  explicit NarrowCall(at::ScalarType dtype) {
    if (dtype != at::kBFloat16) return;
    products.emplace();
    if (BFloat16Products::active()) weights.emplace();
  }
  bool keeps_weights() const { return weights.has_value(); }
  // Widens the call's input (slot `input`; kept where the weights are), hx,
  // cx and params (slots input + 1 to input + 3).
  void widen_arguments(torch::jit::Stack& s, size_t input) const {
    if (!keeps_weights()) cast_slots(s, input, 1, at::kFloat);
    cast_slots(s, input + 1, 3, at::kFloat, true, keeps_weights());
  }
  std::optional<BFloat16Products> products;
  std::optional<BFloat16Weights> weights;
};

void forward_cpu(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  torch::jit::Stack& s = *stack;
  const size_t first = s.size() - kForwardSlots;
  if (!narrow_float(s[first])) return run_forward(stack, kCpuKernels);
  const at::ScalarType dtype = s[first].toTensor().scalar_type();
  const NarrowCall call(dtype);
  call.widen_arguments(s, first);
  run_forward(stack, kCpuKernels);
  cast_slots(s, s.size() - 4, 3, dtype, false);  // output, hy, cy; saved stays float
}

void backward_cpu(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  torch::jit::Stack& s = *stack;
  const size_t first = s.size() - kBackwardSlots;
  const size_t input = first + 3;
  if (!narrow_float(s[input])) return run_backward(stack, kCpuKernels);
  const at::ScalarType dtype = s[input].toTensor().scalar_type();
  const NarrowCall call(dtype);
  cast_slots(s, first, 3, at::kFloat);  // gradients
  call.widen_arguments(s, input);
  cast_slots(s, input + LstmArgs::kCount, 1, at::kFloat);  // output
  run_backward(stack, kCpuKernels);
  cast_slots(s, s.size() - 4, 4, dtype, false);
}

}  // namespace
}  // namespace rnnkernels

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_forward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::forward_cpu>());
  m.impl("lstm_backward", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::backward_cpu>());
}

// The public op rnnkernels::lstm: its autograd in C++ (one graph node per
// call, whose backward is the fused lstm_backward) and, below autograd, the
// inference path that saves nothing. Both reach the backends through
// lstm_forward.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "lstm_args.h"

namespace rnnkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::OperatorHandle& forward_op() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("rnnkernels::lstm_forward", "");
  return op;
}

const c10::OperatorHandle& backward_op() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("rnnkernels::lstm_backward", "");
  return op;
}

// Runs lstm_forward on the arguments; returns output, hy, cy, saved.
torch::jit::Stack call_forward(const LstmArgs& a, bool need_backward) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  torch::jit::Stack s;
  a.push(s);
  s.emplace_back(need_backward);
  forward_op().callBoxed(s);
  return s;
}

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::make_optional(t) : std::nullopt;
}

// Saved for backward, in this order: input, hx, cx (undefined for None),
// params, batch_sizes, reset, output, then what lstm_forward saved.
struct LstmFunction : public torch::autograd::Function<LstmFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const std::optional<at::Tensor>& hx,
                               const std::optional<at::Tensor>& cx, at::TensorList params,
                               const LstmArgs* a) {
    torch::jit::Stack s = call_forward(*a, /*need_backward=*/true);
    const at::Tensor output = s[0].toTensor();
    std::vector<at::Tensor> to_save{input, hx.value_or(at::Tensor()), cx.value_or(at::Tensor())};
    to_save.insert(to_save.end(), params.begin(), params.end());
    to_save.push_back(a->batch_sizes.value_or(at::Tensor()));
    to_save.push_back(a->reset.value_or(at::Tensor()));
    to_save.push_back(output);
    const std::vector<at::Tensor> saved = s[3].toTensorVector();
    to_save.insert(to_save.end(), saved.begin(), saved.end());
    ctx->save_for_backward(to_save);
    ctx->saved_data["params"] = static_cast<int64_t>(params.size());
    ctx->saved_data["has_biases"] = a->has_biases;
    ctx->saved_data["num_layers"] = a->num_layers;
    ctx->saved_data["bidirectional"] = a->bidirectional;
    ctx->saved_data["dropout"] = a->dropout;
    ctx->saved_data["train"] = a->train;
    ctx->saved_data["window"] = a->window;
    ctx->set_materialize_grads(false);
    return {output, s[1].toTensor(), s[2].toTensor()};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list v = ctx->get_saved_variables();
    const int64_t n = ctx->saved_data["params"].toInt();
    variable_list result(static_cast<size_t>(n) + 4);
    if (!grads[0].defined() && !grads[1].defined() && !grads[2].defined()) return result;
    LstmArgs a;
    a.input = v[0];
    a.hx = defined_or_none(v[1]);
    a.cx = defined_or_none(v[2]);
    a.params.assign(v.begin() + 3, v.begin() + 3 + n);
    a.batch_sizes = defined_or_none(v[3 + n]);
    a.reset = defined_or_none(v[4 + n]);
    a.has_biases = ctx->saved_data["has_biases"].toBool();
    a.num_layers = ctx->saved_data["num_layers"].toInt();
    a.bidirectional = ctx->saved_data["bidirectional"].toBool();
    a.dropout = ctx->saved_data["dropout"].toDouble();
    a.train = ctx->saved_data["train"].toBool();
    a.window = ctx->saved_data["window"].toInt();
    const std::vector<at::Tensor> saved(v.begin() + 6 + n, v.end());

    torch::jit::Stack s;
    for (int i = 0; i < 3; ++i) s.emplace_back(defined_or_none(grads[i]));
    a.push(s);
    s.emplace_back(v[5 + n]);
    s.emplace_back(saved);
    s.emplace_back(ctx->needs_input_grad(0));
    // needs_input_grad counts the tensors given: input, hx and cx where
    // present, then params.
    const int64_t first_param = 1 + (a.hx ? 1 : 0) + (a.cx ? 1 : 0);
    bool need_weight_grad = false;
    for (int64_t i = 0; i < n; ++i) need_weight_grad |= ctx->needs_input_grad(first_param + i);
    s.emplace_back(need_weight_grad);
    if (at::GradMode::is_enabled()) {
      // create_graph: through lstm_backward's own autograd (rnnkernels/ops.py)
      // so that second-order gradients are right.
      backward_op().callBoxed(s);
    } else {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      backward_op().callBoxed(s);
    }
    if (ctx->needs_input_grad(0)) result[0] = s[0].toTensor();
    if (a.hx) result[1] = s[1].toTensor();
    if (a.cx) result[2] = s[2].toTensor();
    const std::vector<at::Tensor> dparams = s[3].toTensorVector();
    std::copy(dparams.begin(), dparams.end(), result.begin() + 3);
    return result;
  }
};

// Whether any differentiable argument satisfies `test`.
template <typename F>
bool any_differentiable(const LstmArgs& a, const F& test) {
  if (test(a.input) || (a.hx && test(*a.hx)) || (a.cx && test(*a.cx))) return true;
  return std::any_of(a.params.begin(), a.params.end(), test);
}

bool any_requires_grad(const LstmArgs& a) {
  return any_differentiable(a, [](const at::Tensor& t) { return t.requires_grad(); });
}

// The op's derivative is a backward only. A forward-mode tangent
// (torch.autograd.forward_ad, or torch.func.jvp and jacfwd, which run at
// level 0 too) is refused, not dropped from outputs that would then look
// constant; rnnkernels.LSTM runs such calls on the reference.
void refuse_forward_ad(const LstmArgs& a, const char* op) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      !any_differentiable(a, [](const at::Tensor& t) { return t._fw_grad(0).defined(); }),
      "Trying to use forward AD with ", op,
      " that does not support it; rnnkernels.LSTM runs such calls on rnnkernels.reference.lstm, "
      "which does");
}

void lstm_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                   torch::jit::Stack* stack) {
  const LstmArgs a = LstmArgs::read(*stack, stack->size() - LstmArgs::kCount);
  refuse_forward_ad(a, "rnnkernels::lstm");
  if (!at::GradMode::is_enabled() || !any_requires_grad(a)) {
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
    return;
  }
  torch::jit::drop(*stack, LstmArgs::kCount);
  const variable_list out = LstmFunction::apply(a.input, a.hx, a.cx, at::TensorList(a.params), &a);
  torch::jit::push(*stack, out[0], out[1], out[2]);
}

// lstm_forward is the inner half of lstm and has no derivative of its own: a
// direct call that would need one is refused instead of recording nothing.
void forward_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                      torch::jit::Stack* stack) {
  const LstmArgs a = LstmArgs::read(*stack, stack->size() - kForwardSlots);
  refuse_forward_ad(a, "rnnkernels::lstm_forward");
  TORCH_CHECK(!at::GradMode::is_enabled() || !any_requires_grad(a),
              "rnnkernels.lstm_forward has no gradient of its own; call "
              "torch.ops.rnnkernels.lstm, whose autograd runs it");
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

// Below autograd (inference mode, or no tensor needs a gradient): the
// forward without saving anything.
void lstm_inference(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  const LstmArgs a = LstmArgs::read(*stack, stack->size() - LstmArgs::kCount);
  torch::jit::drop(*stack, LstmArgs::kCount);
  torch::jit::Stack s = call_forward(a, /*need_backward=*/false);
  torch::jit::push(*stack, s[0], s[1], s[2]);
}

}  // namespace
}  // namespace rnnkernels

TORCH_LIBRARY_IMPL(rnnkernels, Autograd, m) {
  m.impl("lstm", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::lstm_autograd>());
  m.impl("lstm_forward",
         torch::CppFunction::makeFromBoxedFunction<&rnnkernels::forward_autograd>());
}

TORCH_LIBRARY_IMPL(rnnkernels, CompositeExplicitAutograd, m) {
  m.impl("lstm", torch::CppFunction::makeFromBoxedFunction<&rnnkernels::lstm_inference>());
}

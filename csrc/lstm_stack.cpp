#include "lstm_stack.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/irange.h>

#include <tuple>

namespace rnnkernels {
namespace {

// What the driver's own ATen calls run under: below autograd (the op's
// autograd is its own, and a direct call with tensors that require grad
// must not record them), and without autocast (the op runs in its inputs'
// dtype, so its GEMMs must not be recast).
struct KernelScope {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

// A contiguous copy of t in o's dtype, or zeros.
at::Tensor state_or_zeros(const std::optional<at::Tensor>& t, at::IntArrayRef shape,
                          const at::TensorOptions& o) {
  if (!t) return at::zeros(shape, o);
  const at::Tensor c = t->to(o).contiguous();
  return c.is_same(*t) ? c.clone() : c;
}

// dx += dG @ w_ih (dx undefined: dx = dG @ w_ih).
void add_input_grad(at::Tensor& dx, const at::Tensor& dG, const at::Tensor& w_ih,
                    const LayerKernels& k) {
  at::Tensor part = k.linear(dG, w_ih.t());
  if (dx.defined()) {
    dx.add_(part);
  } else {
    dx = part;
  }
}

// g as (rows, cols) of contiguous columns, what the kernels read. The
// gradient of a sum or mean of the output is one value (or row) that
// autograd expanded to every row: that row is read with a row stride of 0,
// not copied out to every row (at T10 B32 H512, 145 us of a 10 ms training
// step).
at::Tensor output_grad_rows(const at::Tensor& g, int64_t rows, int64_t cols) {
  const at::Tensor r = g.reshape({rows, cols});
  if (rows > 1 && r.stride(0) == 0) return r[0].contiguous().expand({rows, cols});
  return r.contiguous();
}

// Dropout between layers, as F.dropout: zero with probability p, else
// scaled by 1 / (1 - p).
at::Tensor dropout_mask(const at::Tensor& like, double p) {
  if (p >= 1) return at::zeros_like(like);
  return at::empty_like(like).bernoulli_(1 - p).div_(1 - p);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> stack_forward(
    const LstmArgs& a, bool save, const LayerKernels& kernels) {
  const KernelScope scope;
  const StackDims d = check_args(a);
  const StepRows steps(a, d);
  const auto opts = a.input.options().dtype(kernel_type(a.input));
  const auto acc_opts = opts.dtype(acc_type(a.input.scalar_type()));
  at::Tensor hy = state_or_zeros(a.hx, {d.groups(), d.B, d.P}, opts);
  at::Tensor cy = state_or_zeros(a.cx, {d.groups(), d.B, d.H}, acc_opts);
  const at::Tensor reset = a.reset ? a.reset->contiguous() : at::Tensor();
  const bool* reset_ptr = reset.defined() ? reset.const_data_ptr<bool>() : nullptr;

  std::vector<at::Tensor> saved;
  at::Tensor x = a.input.reshape({d.rows, d.I});
  at::Tensor output;
  for (const auto layer : c10::irange(d.L)) {
    // The last layer's output is the user's, in the input's dtype (a kept
    // bfloat16 input's kernels round it as they write it).
    at::Tensor out =
        kernels.empty({d.rows, d.D * d.P}, layer + 1 == d.L ? a.input.options() : opts);
    at::Tensor cells = save ? kernels.empty({d.D, d.rows, d.H}, acc_opts) : at::Tensor();
    std::vector<at::Tensor> gates;
    std::vector<LayerForward> dirs;
    for (const auto dir : c10::irange(d.D)) {
      const GroupWeights w = group_weights(a, d, layer, dir);
      at::Tensor gates_dir = save ? kernels.empty({d.rows, 4 * d.H}, opts) : at::Tensor();
      const int64_t g = layer * d.D + dir;
      dirs.push_back(LayerForward{&steps, dir == 1, reset_ptr, x, w.w_ih, w.w_hh, w.w_hr,
                                  w.b_ih.defined() ? w.b_ih + w.b_hh : at::Tensor(), gates_dir,
                                  hy[g], cy[g], out.narrow(1, dir * d.P, d.P),
                                  save ? cells[dir] : at::Tensor()});
      if (save) gates.push_back(gates_dir);
    }
    if (d.rows > 0) kernels.forward(dirs);
    if (save) {
      saved.insert(saved.end(), gates.begin(), gates.end());
      saved.push_back(cells);
    }
    if (layer + 1 == d.L) {
      output = out;
      break;
    }
    if (save) saved.push_back(out);
    if (a.dropout_active()) {
      at::Tensor mask = dropout_mask(out, a.dropout);
      x = out * mask;
      if (save) saved.push_back(mask);
    } else {
      x = out;
    }
  }
  std::vector<int64_t> shape = a.input.sizes().vec();
  shape.back() = d.D * d.P;
  return {output.view(shape), hy, cy.to(opts.dtype()), saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> stack_backward(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const LstmArgs& a, const at::Tensor& output,
    const std::vector<at::Tensor>& saved, bool need_input_grad, bool need_weight_grad,
    const LayerKernels& kernels) {
  const KernelScope scope;
  const StackDims d = check_args(a);
  const std::vector<SavedLayer> layers =
      check_backward_args(a, d, grad_output, grad_hy, grad_cy, output, saved);
  const StepRows steps(a, d);
  const auto opts = a.input.options().dtype(kernel_type(a.input));
  const auto acc_opts = opts.dtype(acc_type(a.input.scalar_type()));
  at::Tensor dhx = state_or_zeros(grad_hy, {d.groups(), d.B, d.P}, opts);
  at::Tensor dcx = state_or_zeros(grad_cy, {d.groups(), d.B, d.H}, acc_opts);
  const at::Tensor h0 = a.hx ? a.hx->contiguous() : at::zeros_like(dhx);
  const at::Tensor c0 = a.cx ? a.cx->to(acc_opts).contiguous() : at::zeros_like(dcx);
  const at::Tensor reset = a.reset ? a.reset->contiguous() : at::Tensor();
  const bool* reset_ptr = reset.defined() ? reset.const_data_ptr<bool>() : nullptr;

  // Without need_weight_grad (no parameter needs a gradient: a frozen LSTM
  // under a trained input, or autograd.grad with respect to the input alone)
  // the weight GEMMs, a third of a training step's flops, are skipped and
  // grad_params is empty, as ATen's RNN backwards do for an output_mask.
  std::vector<at::Tensor> dparams(need_weight_grad ? a.params.size() : 0);
  // Gradient reaching the current layer's output, (rows, D*P) or undefined.
  at::Tensor grad_out =
      grad_output ? output_grad_rows(*grad_output, d.rows, d.D * d.P) : at::Tensor();
  at::Tensor grad_input = at::empty({0}, opts);
  for (int64_t layer = d.L - 1; layer >= 0; --layer) {
    const SavedLayer& s = layers[layer];
    const at::Tensor y =
        (layer + 1 == d.L ? output.reshape({d.rows, d.D * d.P}) : s.out).contiguous();
    const at::Tensor cells = s.cells.contiguous();
    at::Tensor x;  // the layer's input, for its weight gradient
    if (layer == 0) {
      x = a.input.reshape({d.rows, d.I});
    } else if (need_weight_grad) {
      const SavedLayer& below = layers[layer - 1];
      x = below.mask.defined() ? below.out * below.mask : below.out;
    }
    const bool need_dx = layer > 0 || need_input_grad;
    at::Tensor dx;
    at::Tensor dG = kernels.empty({d.D, d.rows, 4 * d.H}, a.input.options());
    std::vector<LayerBackward> dirs;
    std::vector<at::Tensor> w_ih;
    for (const auto dir : c10::irange(d.D)) {
      const GroupWeights w = group_weights(a, d, layer, dir);
      const int64_t g = layer * d.D + dir;
      w_ih.push_back(w.w_ih);
      dirs.push_back(LayerBackward{
          &steps, dir == 1, a.window, reset_ptr, s.gates[dir].contiguous(), cells[dir],
          y.narrow(1, dir * d.P, d.P), h0[g], c0[g],
          grad_out.defined() ? grad_out.narrow(1, dir * d.P, d.P) : at::Tensor(), w.w_hh, w.w_hr,
          dhx[g], dcx[g], dG[dir],
          a.has_biases && need_weight_grad ? at::empty({4 * d.H}, opts) : at::Tensor(),
          kernels.empty({d.rows, d.P}, opts),
          d.proj ? kernels.empty({d.rows, d.P}, opts) : at::Tensor(),
          d.proj ? kernels.empty({d.rows, d.H}, opts) : at::Tensor()});
    }
    if (d.rows > 0) {
      kernels.backward(dirs);
    } else {
      dG.zero_();
      for (LayerBackward& b : dirs) {
        b.h_prev.zero_();
        if (b.dG_sum.defined()) b.dG_sum.zero_();
      }
    }
    for (const auto dir : c10::irange(d.D)) {
      // The gradients that are one GEMM or reduction each over all steps.
      const LayerBackward& b = dirs[dir];
      if (need_weight_grad) {
        at::Tensor* dp = &dparams[(layer * d.D + dir) * d.per_group];
        const std::vector<at::Tensor> dW = kernels.weight_grad(b.dG, {x, b.h_prev});
        dp[0] = dW[0];
        dp[1] = dW[1];
        if (a.has_biases) {
          dp[2] = b.dG_sum;
          dp[3] = b.dG_sum.clone();
        }
        if (d.proj)
          dp[a.has_biases ? 4 : 2] = d.rows > 0 ? kernels.weight_grad(b.dh_all, {b.r_all})[0]
                                                : at::zeros({d.P, d.H}, opts);
      }
      if (need_dx) add_input_grad(dx, b.dG, w_ih[dir], kernels);
    }
    if (layer > 0) {
      const at::Tensor& mask = layers[layer - 1].mask;
      grad_out = mask.defined() ? dx * mask : dx;
    } else if (need_dx) {
      grad_input = dx.view(a.input.sizes());
    }
  }
  return {grad_input, dhx, dcx.to(opts.dtype()), dparams};
}

}  // namespace

void run_forward(torch::jit::Stack* stack, const LayerKernels& kernels) {
  constexpr size_t n = kForwardSlots;
  const LstmArgs a = LstmArgs::read(*stack, stack->size() - n);
  const bool need_backward = stack->back().toBool();
  torch::jit::drop(*stack, n);
  auto [output, hy, cy, saved] = stack_forward(a, need_backward, kernels);
  torch::jit::push(*stack, output, hy, cy, saved);
}

void run_backward(torch::jit::Stack* stack, const LayerKernels& kernels) {
  constexpr size_t n = kBackwardSlots;
  torch::jit::Stack& s = *stack;
  const size_t first = s.size() - n;
  const auto grad_output = s[first].toOptional<at::Tensor>();
  const auto grad_hy = s[first + 1].toOptional<at::Tensor>();
  const auto grad_cy = s[first + 2].toOptional<at::Tensor>();
  const LstmArgs a = LstmArgs::read(s, first + 3);
  const size_t rest = first + 3 + LstmArgs::kCount;
  const at::Tensor output = s[rest].toTensor();
  const std::vector<at::Tensor> saved = s[rest + 1].toTensorVector();
  const bool need_input_grad = s[rest + 2].toBool();
  const bool need_weight_grad = s[rest + 3].toBool();
  torch::jit::drop(s, n);
  auto [dx, dhx, dcx, dparams] = stack_backward(grad_output, grad_hy, grad_cy, a, output, saved,
                                                need_input_grad, need_weight_grad, kernels);
  torch::jit::push(s, dx, dhx, dcx, dparams);
}

}  // namespace rnnkernels

#include "lstm_args.h"

#include <c10/util/irange.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <string>

namespace rnnkernels {
namespace {

void check_like(const at::Tensor& input, const at::Tensor& t, const std::string& name,
                bool weight_matrix = false) {
  const at::ScalarType want = kernel_type(input);
  const bool narrow = weight_matrix && BFloat16Weights::raised() &&
                      t.scalar_type() == at::kBFloat16 && want == at::kFloat;
  TORCH_CHECK(t.scalar_type() == want || narrow, "rnnkernels.lstm: ", name, " has dtype ",
              t.scalar_type(), " but input has dtype ", input.scalar_type());
  TORCH_CHECK(t.device() == input.device(), "rnnkernels.lstm: ", name, " is on ", t.device(),
              " but input is on ", input.device());
}

// The cell state is kept in acc_type(input dtype).
void check_cell_like(const at::Tensor& input, const at::Tensor& t, const std::string& name) {
  const at::ScalarType want = acc_type(input.scalar_type());
  TORCH_CHECK(t.scalar_type() == want, "rnnkernels.lstm: ", name, " has dtype ", t.scalar_type(),
              " but must have dtype ", want);
  TORCH_CHECK(t.device() == input.device(), "rnnkernels.lstm: ", name, " is on ", t.device(),
              " but input is on ", input.device());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const std::string& name) {
  TORCH_CHECK(t.sizes() == expected, "rnnkernels.lstm: ", name, " must have shape ", expected,
              ", got ", t.sizes());
}

// check_shape, then check_like.
void check_tensor(const at::Tensor& input, const at::Tensor& t, at::IntArrayRef shape,
                  const std::string& name, bool weight_matrix = false) {
  check_shape(t, shape, name);
  check_like(input, t, name, weight_matrix);
}

// The same for an optional tensor, where it is given.
void check_tensor(const at::Tensor& input, const std::optional<at::Tensor>& t,
                  at::IntArrayRef shape, const std::string& name) {
  if (t) check_tensor(input, *t, shape, name);
}

int64_t checked_mul(int64_t a, int64_t b, const StackDims& d) {
  int64_t out = 0;
  TORCH_CHECK(!c10::mul_overflows(a, b, &out),
              "rnnkernels.lstm: the sizes overflow int64 (T = ", d.T, ", B = ", d.B, ", H = ", d.H,
              ", P = ", d.P, ")");
  return out;
}

// nn.LSTM's name of a weight, for error messages.
std::string param_name(const char* kind, int64_t layer, int64_t dir) {
  return std::string(kind) + "_l" + std::to_string(layer) + (dir == 1 ? "_reverse" : "");
}

// Reads and checks batch_sizes: positive, non-increasing, summing to rows.
void check_batch_sizes(const at::Tensor& bs, StackDims& d) {
  TORCH_CHECK(bs.scalar_type() == at::kLong && bs.dim() == 1 && bs.device().is_cpu(),
              "rnnkernels.lstm: batch_sizes must be a 1-D int64 tensor on the CPU, got ",
              bs.scalar_type(), " ", bs.sizes(), " on ", bs.device());
  const at::Tensor c = bs.contiguous();
  const int64_t* p = c.const_data_ptr<int64_t>();
  d.T = bs.size(0);
  d.B = d.T > 0 ? p[0] : 0;
  int64_t total = 0;
  for (const auto t : c10::irange(d.T)) {
    TORCH_CHECK(
        p[t] >= 1 && (t == 0 || p[t] <= p[t - 1]),
        "rnnkernels.lstm: batch_sizes must be positive and non-increasing, got batch_sizes[", t,
        "] = ", p[t]);
    total += p[t];
  }
  TORCH_CHECK(total == d.rows, "rnnkernels.lstm: batch_sizes sum to ", total,
              " but the packed input has ", d.rows, " rows");
}

// The saved tensors by layer, each checked against the shapes and dtypes a
// forward that saves for backward gives them.
std::vector<SavedLayer> saved_layers(const LstmArgs& a, const StackDims& d,
                                     const std::vector<at::Tensor>& saved) {
  const bool masks = a.dropout_active();
  const size_t expected = (d.D + 1) * d.L + (d.L - 1) * (masks ? 2 : 1);
  TORCH_CHECK(saved.size() == expected, "rnnkernels.lstm: backward needs the ", expected,
              " tensors a forward with need_backward=True saves, got ", saved.size());
  std::vector<SavedLayer> out(d.L);
  size_t k = 0;
  for (const auto layer : c10::irange(d.L)) {
    SavedLayer& s = out[layer];
    for (int64_t dir = 0; dir < d.D; ++dir) {
      s.gates.push_back(saved[k++]);
      check_tensor(a.input, s.gates.back(), {d.rows, 4 * d.H}, "saved gates");
    }
    s.cells = saved[k++];
    check_shape(s.cells, {d.D, d.rows, d.H}, "saved cells");
    check_cell_like(a.input, s.cells, "saved cells");
    if (layer + 1 < d.L) {
      s.out = saved[k++];
      check_tensor(a.input, s.out, {d.rows, d.D * d.P}, "saved layer output");
      if (masks) {
        s.mask = saved[k++];
        check_tensor(a.input, s.mask, {d.rows, d.D * d.P}, "saved dropout mask");
      }
    }
  }
  return out;
}

}  // namespace

LstmArgs LstmArgs::read(const torch::jit::Stack& s, size_t i) {
  LstmArgs a;
  a.input = s[i].toTensor();
  a.hx = s[i + 1].toOptional<at::Tensor>();
  a.cx = s[i + 2].toOptional<at::Tensor>();
  a.params = s[i + 3].toTensorVector();
  a.batch_sizes = s[i + 4].toOptional<at::Tensor>();
  a.reset = s[i + 5].toOptional<at::Tensor>();
  a.has_biases = s[i + 6].toBool();
  a.num_layers = s[i + 7].toInt();
  a.bidirectional = s[i + 8].toBool();
  a.dropout = s[i + 9].toDouble();
  a.train = s[i + 10].toBool();
  a.window = s[i + 11].toInt();
  return a;
}

void LstmArgs::push(torch::jit::Stack& s) const {
  torch::jit::push(s, input, hx, cx, params, batch_sizes, reset, has_biases, num_layers,
                   bidirectional, dropout, train, window);
}

StackDims check_args(const LstmArgs& a) {
  const at::Tensor& x = a.input;
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "rnnkernels.lstm: input must be a floating point tensor, got ", x.scalar_type());
  StackDims d;
  d.packed = a.batch_sizes.has_value();
  if (d.packed) {
    TORCH_CHECK(x.dim() == 2, "rnnkernels.lstm: packed input must be 2-D (rows, features), got ",
                x.dim(), "-D");
    d.rows = x.size(0);
    check_batch_sizes(*a.batch_sizes, d);
  } else {
    TORCH_CHECK(x.dim() == 3, "rnnkernels.lstm: input must be 3-D (T, B, features), got ", x.dim(),
                "-D");
    d.T = x.size(0);
    d.B = x.size(1);
    d.rows = checked_mul(d.T, d.B, d);
  }
  d.I = x.size(-1);
  TORCH_CHECK(a.num_layers >= 1, "rnnkernels.lstm: num_layers must be at least 1, got ",
              a.num_layers);
  TORCH_CHECK(a.window >= 0, "rnnkernels.lstm: window must be >= 0, got ", a.window);
  TORCH_CHECK(a.dropout >= 0 && a.dropout <= 1, "rnnkernels.lstm: dropout must be in [0, 1], got ",
              a.dropout);
  d.L = a.num_layers;
  d.D = a.bidirectional ? 2 : 1;
  const int64_t n = static_cast<int64_t>(a.params.size());
  const int64_t base = a.has_biases ? 4 : 2;
  TORCH_CHECK(n % d.groups() == 0 && (n / d.groups() == base || n / d.groups() == base + 1),
              "rnnkernels.lstm: expected ", base, " or ", base + 1, " params for each of the ",
              d.groups(), " layer-directions (w_ih, w_hh", a.has_biases ? ", b_ih, b_hh" : "",
              ", optionally w_hr), got ", n, " params");
  d.per_group = n / d.groups();
  d.proj = d.per_group == base + 1;

  const at::Tensor& w0 = a.params[0];
  TORCH_CHECK(w0.dim() == 2 && w0.size(0) > 0 && w0.size(0) % 4 == 0,
              "rnnkernels.lstm: weight_ih_l0 must have shape (4*hidden_size, input_size), got ",
              w0.sizes());
  d.H = w0.size(0) / 4;
  if (d.proj) {
    const at::Tensor& hr = a.params[base];
    TORCH_CHECK(hr.dim() == 2 && hr.size(0) > 0,
                "rnnkernels.lstm: weight_hr_l0 must have shape (proj_size, "
                "hidden_size) with proj_size > 0, got ",
                hr.sizes());
    d.P = hr.size(0);
  } else {
    d.P = d.H;
  }
  // Index arithmetic runs in int64 over every buffer of a layer.
  checked_mul(checked_mul(d.rows, d.D, d), std::max({4 * d.H, d.P, d.I}), d);

  for (const auto layer : c10::irange(d.L)) {
    for (const auto dir : c10::irange(d.D)) {
      const GroupWeights w = group_weights(a, d, layer, dir);
      auto check = [&](const at::Tensor& t, const char* kind, at::IntArrayRef shape) {
        check_tensor(x, t, shape, param_name(kind, layer, dir), shape.size() == 2);
      };
      check(w.w_ih, "weight_ih", {4 * d.H, d.layer_input(layer)});
      check(w.w_hh, "weight_hh", {4 * d.H, d.P});
      if (a.has_biases) {
        check(w.b_ih, "bias_ih", {4 * d.H});
        check(w.b_hh, "bias_hh", {4 * d.H});
      }
      if (d.proj) check(w.w_hr, "weight_hr", {d.P, d.H});
    }
  }
  check_tensor(x, a.hx, {d.groups(), d.B, d.P}, "hx");
  check_tensor(x, a.cx, {d.groups(), d.B, d.H}, "cx");
  if (a.reset) {
    TORCH_CHECK(a.reset->scalar_type() == at::kBool,
                "rnnkernels.lstm: reset must be a bool tensor, got ", a.reset->scalar_type());
    check_shape(*a.reset, {d.T, d.B}, "reset");
    TORCH_CHECK(a.reset->device() == x.device(), "rnnkernels.lstm: reset is on ", a.reset->device(),
                " but input is on ", x.device());
  }
  return d;
}

GroupWeights group_weights(const LstmArgs& a, const StackDims& d, int64_t layer, int64_t dir) {
  const auto* p = &a.params[(layer * d.D + dir) * d.per_group];
  GroupWeights w;
  w.w_ih = p[0];
  w.w_hh = p[1];
  const int64_t next = a.has_biases ? 4 : 2;
  if (a.has_biases) {
    w.b_ih = p[2];
    w.b_hh = p[3];
  }
  if (d.proj) w.w_hr = p[next];
  return w;
}

std::vector<SavedLayer> check_backward_args(const LstmArgs& a, const StackDims& d,
                                            const std::optional<at::Tensor>& grad_output,
                                            const std::optional<at::Tensor>& grad_hy,
                                            const std::optional<at::Tensor>& grad_cy,
                                            const at::Tensor& output,
                                            const std::vector<at::Tensor>& saved) {
  std::vector<int64_t> out_shape = a.input.sizes().vec();
  out_shape.back() = d.D * d.P;
  check_tensor(a.input, output, out_shape, "output");
  check_tensor(a.input, grad_output, out_shape, "grad_output");
  check_tensor(a.input, grad_hy, {d.groups(), d.B, d.P}, "grad_hy");
  check_tensor(a.input, grad_cy, {d.groups(), d.B, d.H}, "grad_cy");
  return saved_layers(a, d, saved);
}

StepRows::StepRows(const LstmArgs& a, const StackDims& d) : T_(d.T), B_(d.B), packed_(d.packed) {
  if (!packed_) return;
  const at::Tensor c = a.batch_sizes->contiguous();
  batch_.assign(c.const_data_ptr<int64_t>(), c.const_data_ptr<int64_t>() + T_);
  offset_.assign(T_ + 1, 0);
  for (const auto t : c10::irange(T_)) offset_[t + 1] = offset_[t] + batch_[t];
}

int64_t StepRows::length(int64_t b) const {
  if (!packed_) return b < B_ ? T_ : 0;
  // Batch sizes are non-increasing: the steps covering b are a prefix.
  return std::partition_point(batch_.begin(), batch_.end(), [b](int64_t v) { return v > b; }) -
         batch_.begin();
}

}  // namespace rnnkernels

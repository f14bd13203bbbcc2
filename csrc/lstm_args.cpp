#include "lstm_args.h"

#include <c10/util/irange.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <exception>

namespace rnnkernels {
namespace {

void check_same(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "rnnkernels.lstm: ", name,
              " has dtype ", t.scalar_type(), " but x has dtype ",
              ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "rnnkernels.lstm: ", name,
              " is on ", t.device(), " but x is on ", ref.device());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected,
                 const char* name) {
  TORCH_CHECK(t.sizes() == expected, "rnnkernels.lstm: ", name,
              " must have shape ", expected, ", got ", t.sizes());
}

}  // namespace

LstmDims check_forward_args(const at::Tensor& x, const at::Tensor& h0,
                            const at::Tensor& c0, const at::Tensor& w_ih,
                            const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh,
                            const std::optional<at::Tensor>& w_hr,
                            const std::optional<at::Tensor>& reset,
                            const std::optional<at::Tensor>& lengths,
                            int64_t window) {
  TORCH_CHECK(x.dim() == 3, "rnnkernels.lstm: x must be 3-D (T, B, I), got ",
              x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "rnnkernels.lstm: x must be a floating point tensor, got ",
              x.scalar_type());
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0,
              "rnnkernels.lstm: w_ih must have shape (4*H, I), got ",
              w_ih.sizes());
  TORCH_CHECK(window >= 0, "rnnkernels.lstm: window must be >= 0, got ",
              window);

  LstmDims d;
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  d.H = w_ih.size(0) / 4;
  d.proj = w_hr.has_value();
  // Checked before w_hr->size(0) names P, which every other shape uses.
  if (d.proj) {
    TORCH_CHECK(w_hr->dim() == 2 && w_hr->size(0) > 0,
                "rnnkernels.lstm: w_hr must have shape (P, H) with P > 0, got ",
                w_hr->sizes());
  }
  d.P = d.proj ? w_hr->size(0) : d.H;
  // Index arithmetic in the kernels runs in int64 over (T, B, 4H) and (T, B, P).
  int64_t rows = 0, elems = 0;
  TORCH_CHECK(!c10::mul_overflows(d.T, d.B, &rows) &&
                  !c10::mul_overflows(rows, std::max(4 * d.H, d.P), &elems),
              "rnnkernels.lstm: T * B * max(4H, P) overflows int64 (T = ", d.T,
              ", B = ", d.B, ", H = ", d.H, ", P = ", d.P, ")");

  check_shape(w_ih, {4 * d.H, d.I}, "w_ih");
  check_same(x, w_ih, "w_ih");
  check_shape(w_hh, {4 * d.H, d.P}, "w_hh");
  check_same(x, w_hh, "w_hh");
  check_shape(h0, {d.B, d.P}, "h0");
  check_same(x, h0, "h0");
  check_shape(c0, {d.B, d.H}, "c0");
  check_same(x, c0, "c0");
  if (b_ih) {
    check_shape(*b_ih, {4 * d.H}, "b_ih");
    check_same(x, *b_ih, "b_ih");
  }
  if (b_hh) {
    check_shape(*b_hh, {4 * d.H}, "b_hh");
    check_same(x, *b_hh, "b_hh");
  }
  if (w_hr) {
    check_shape(*w_hr, {d.P, d.H}, "w_hr");
    check_same(x, *w_hr, "w_hr");
  }
  if (reset) {
    TORCH_CHECK(reset->scalar_type() == at::kBool,
                "rnnkernels.lstm: reset must be a bool tensor, got ",
                reset->scalar_type());
    check_shape(*reset, {d.T, d.B}, "reset");
    TORCH_CHECK(reset->device() == x.device(), "rnnkernels.lstm: reset is on ",
                reset->device(), " but x is on ", x.device());
  }
  if (lengths) {
    TORCH_CHECK(lengths->scalar_type() == at::kLong && lengths->dim() == 1 &&
                    lengths->size(0) == d.B,
                "rnnkernels.lstm: lengths must be an int64 tensor of shape (",
                d.B, "), got ", lengths->scalar_type(), " ", lengths->sizes());
    TORCH_CHECK(lengths->device().is_cpu(),
                "rnnkernels.lstm: lengths must be on the CPU, got ",
                lengths->device());
  }
  return d;
}

void check_backward_args(const LstmDims& d, const at::Tensor& x,
                         const std::optional<at::Tensor>& grad_y,
                         const std::optional<at::Tensor>& grad_hn,
                         const std::optional<at::Tensor>& grad_cn,
                         const at::Tensor& y, const at::Tensor& gates,
                         const at::Tensor& cells) {
  if (grad_y) {
    check_shape(*grad_y, {d.T, d.B, d.P}, "grad_y");
    check_same(x, *grad_y, "grad_y");
  }
  if (grad_hn) {
    check_shape(*grad_hn, {d.B, d.P}, "grad_hn");
    check_same(x, *grad_hn, "grad_hn");
  }
  if (grad_cn) {
    check_shape(*grad_cn, {d.B, d.H}, "grad_cn");
    check_same(x, *grad_cn, "grad_cn");
  }
  check_shape(y, {d.T, d.B, d.P}, "y");
  check_same(x, y, "y");
  TORCH_CHECK(gates.numel() > 0 || d.T * d.B == 0,
              "rnnkernels.lstm: backward needs the activations that a forward "
              "with need_backward=True saves");
  check_shape(gates, {d.T, d.B, 4 * d.H}, "gates");
  check_same(x, gates, "gates");
  check_shape(cells, {d.T, d.B, d.H}, "cells");
  check_same(x, cells, "cells");
}

std::vector<int64_t> lengths_vector(const LstmDims& d,
                                    const std::optional<at::Tensor>& lengths) {
  // A batch that only exists as an expanded view can be too large for this
  // host vector: that must be a RuntimeError like any failed allocation, not
  // the MemoryError std::bad_alloc becomes.
  std::vector<int64_t> lens;
  try {
    lens.assign(static_cast<size_t>(d.B), d.T);
  } catch (const std::exception&) {
    TORCH_CHECK(false, "rnnkernels.lstm: cannot allocate the lengths of B = ",
                d.B, " samples");
  }
  if (!lengths) return lens;
  const at::Tensor l = lengths->contiguous();
  const int64_t* p = l.data_ptr<int64_t>();
  for (const auto b : c10::irange(d.B)) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= d.T, "rnnkernels.lstm: lengths[", b,
                "] = ", p[b], " is outside [0, T = ", d.T, "]");
    TORCH_CHECK(b == 0 || p[b] <= p[b - 1],
                "rnnkernels.lstm: lengths must be sorted in decreasing order");
    lens[b] = p[b];
  }
  return lens;
}

at::Tensor combined_bias(const std::optional<at::Tensor>& b_ih,
                         const std::optional<at::Tensor>& b_hh) {
  if (b_ih && b_hh) return *b_ih + *b_hh;
  if (b_ih) return *b_ih;
  if (b_hh) return *b_hh;
  return at::Tensor();
}

}  // namespace rnnkernels

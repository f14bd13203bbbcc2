#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/irange.h>

#include <cstring>

#include "../lstm_args.h"
#include "../lstm_setup.h"
#include "../lstm_math.h"
#include "gate_rows.h"
#include "lstm_cpu.h"
#include "parallel_spans.h"

namespace rnnkernels {
namespace {

// The fused pass of one step for the first nb samples: activations, cell
// update, h (or the pre-projection r), and what backward reads.
template <typename scalar_t>
void gate_pass(const LstmDims& d, int64_t s, int64_t nb, bool reverse,
               const int64_t* lens, const scalar_t* G, const scalar_t* R,
               scalar_t* c, scalar_t* h_or_r, scalar_t* y, scalar_t* gates,
               scalar_t* cells) {
  const int64_t H = d.H, B = d.B;
  for_each_span(nb, H, [&](int64_t b, int64_t j0, int64_t j1) {
    const int64_t tb = step_time(s, lens[b], reverse) * B + b;
    const ForwardRow<scalar_t> row{
        G + tb * 4 * H, R + b * 4 * H, c + b * H, h_or_r + b * H,
        y != nullptr ? y + tb * H : nullptr,
        gates != nullptr ? gates + tb * 4 * H : nullptr,
        cells != nullptr ? cells + tb * H : nullptr};
    forward_row(row, j0, j1, H);
  });
}

template <typename scalar_t>
void forward_steps(const LstmDims& d, const std::vector<int64_t>& lens,
                   const bool* reset, bool reverse, const at::Tensor& G,
                   const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                   at::Tensor& h, at::Tensor& c, at::Tensor& y,
                   at::Tensor& gates, at::Tensor& cells) {
  const int64_t B = d.B, H = d.H, P = d.P;
  at::Tensor R = at::empty({B, 4 * H}, G.options());
  at::Tensor r = d.proj ? at::empty({B, H}, G.options()) : at::Tensor();
  const at::Tensor w_hh_t = w_hh.t();
  const at::Tensor w_hr_t = d.proj ? w_hr->t() : at::Tensor();
  const bool save = gates.numel() > 0;

  scalar_t* hp = h.data_ptr<scalar_t>();
  scalar_t* cp = c.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  int64_t nb = B;  // samples still running: lengths are sorted decreasing
  for (const auto s : c10::irange(d.T)) {
    while (nb > 0 && lens[nb - 1] <= s) --nb;
    if (nb == 0) break;
    if (reset != nullptr) {
      for (const auto b : c10::irange(nb)) {
        if (reset_before(s, lens[b], reverse, reset + b, B)) {
          std::memset(hp + b * P, 0, P * sizeof(scalar_t));
          std::memset(cp + b * H, 0, H * sizeof(scalar_t));
        }
      }
    }
    at::Tensor Rn = R.narrow(0, 0, nb);
    at::mm_out(Rn, h.narrow(0, 0, nb), w_hh_t);
    gate_pass<scalar_t>(d, s, nb, reverse, lens.data(),
                        G.const_data_ptr<scalar_t>(),
                        R.const_data_ptr<scalar_t>(), cp,
                        d.proj ? r.data_ptr<scalar_t>() : hp,
                        d.proj ? nullptr : yp,
                        save ? gates.data_ptr<scalar_t>() : nullptr,
                        save ? cells.data_ptr<scalar_t>() : nullptr);
    if (d.proj) {
      at::Tensor hn = h.narrow(0, 0, nb);
      at::mm_out(hn, r.narrow(0, 0, nb), w_hr_t);
      for (const auto b : c10::irange(nb)) {
        const int64_t t = step_time(s, lens[b], reverse);
        std::memcpy(yp + (t * B + b) * P, hp + b * P, P * sizeof(scalar_t));
      }
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_forward_cpu(const at::Tensor& x, const at::Tensor& h0,
                 const at::Tensor& c0, const at::Tensor& w_ih,
                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                 const std::optional<at::Tensor>& b_hh,
                 const std::optional<at::Tensor>& w_hr,
                 const std::optional<at::Tensor>& reset,
                 const std::optional<at::Tensor>& lengths, int64_t window,
                 bool reverse, bool need_backward) {
  const LstmDims d = check_forward_args(x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                        w_hr, reset, lengths, window);
  const std::vector<int64_t> lens = lengths_vector(d, lengths);
  // The row kernels load a span's four pre-activations before storing its
  // activations, so the saved gates may overwrite G.
  ForwardSetup f = setup_forward(d, x, h0, c0, w_ih, b_ih, b_hh,
                                 lengths.has_value(), need_backward,
                                 /*gates_in_G=*/true);
  const at::Tensor reset_c = reset ? reset->contiguous() : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkernels_lstm_forward_cpu",
                             [&] {
                               forward_steps<scalar_t>(
                                   d, lens,
                                   reset ? reset_c.const_data_ptr<bool>()
                                         : nullptr,
                                   reverse, f.G, w_hh, w_hr, f.h, f.c, f.y,
                                   f.gates, f.cells);
                             });
  return {f.y, f.h, f.c, f.gates, f.cells};
}

}  // namespace rnnkernels

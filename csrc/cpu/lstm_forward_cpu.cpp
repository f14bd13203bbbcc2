#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

#include "../lstm_args.h"
#include "../lstm_setup.h"
#include "../lstm_math.h"
#include "gate_rows.h"
#include "lstm_cpu.h"
#include "panel_gemm.h"
#include "step_team.h"

namespace rnnkernels {
namespace {

// Units [u0, u1) of the fused pass of step s for the first nb samples:
// activations, cell update, h (or the pre-projection r) into h_next, and
// what backward reads.
template <typename scalar_t>
void gate_pass(const LstmDims& d, int64_t s, int64_t nb, bool reverse,
               const int64_t* lens, const scalar_t* G, const scalar_t* R,
               scalar_t* c, scalar_t* h_next, scalar_t* y, scalar_t* gates,
               scalar_t* cells, int64_t u0, int64_t u1) {
  const int64_t H = d.H, B = d.B;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t tb = step_time(s, lens[b], reverse) * B + b;
    const ForwardRow<scalar_t> row{
        G + tb * 4 * H, R + b * 4 * H, c + b * H, h_next + b * H,
        y != nullptr ? y + tb * H : nullptr,
        gates != nullptr ? gates + tb * 4 * H : nullptr,
        cells != nullptr ? cells + tb * H : nullptr};
    forward_row(row, u0, u1, H);
  }
}

// Zeroes columns [j0, j1) of the rows (stride n) whose sample resets before
// processing step s.
template <typename scalar_t>
void zero_reset_rows(const bool* reset, int64_t s, int64_t nb, bool reverse,
                     const int64_t* lens, int64_t B, scalar_t* rows, int64_t n,
                     int64_t j0, int64_t j1) {
  if (reset == nullptr) return;
  for (int64_t b = 0; b < nb; ++b) {
    if (s < lens[b] && reset_before(s, lens[b], reverse, reset + b, B))
      std::fill(rows + b * n + j0, rows + b * n + j1, scalar_t(0));
  }
}

// The time loop. h alternates between two buffers, so a step's recurrent
// product reads the whole previous h while the team writes the next one; a
// reset is applied when the step before it writes the state.
template <typename scalar_t>
void forward_steps(const LstmDims& d, const std::vector<int64_t>& lens,
                   const bool* reset, bool reverse, const at::Tensor& G,
                   const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                   at::Tensor& h, at::Tensor& c, at::Tensor& y,
                   at::Tensor& gates, at::Tensor& cells) {
  const int64_t T = d.T, B = d.B, H = d.H, P = d.P;
  // Packed once, multiplied every step: per gate, so that a thread's columns
  // of the product are its units in all four gates.
  std::vector<StepMatrix<scalar_t>> w_gate;
  for (int64_t q = 0; q < 4; ++q) w_gate.emplace_back(w_hh.narrow(0, q * H, H).t());
  const std::optional<StepMatrix<scalar_t>> w_hr_t =
      d.proj ? std::make_optional<StepMatrix<scalar_t>>(w_hr->t()) : std::nullopt;
  at::Tensor R = at::empty({B, 4 * H}, G.options());
  at::Tensor r = d.proj ? at::empty({B, H}, G.options()) : at::Tensor();
  at::Tensor h_other = at::empty_like(h);
  const bool save = gates.numel() > 0;

  scalar_t* const hbuf[2] = {h.data_ptr<scalar_t>(), h_other.data_ptr<scalar_t>()};
  scalar_t* cp = c.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  scalar_t* Rp = R.data_ptr<scalar_t>();
  scalar_t* rp = d.proj ? r.data_ptr<scalar_t>() : nullptr;
  const scalar_t* Gp = G.const_data_ptr<scalar_t>();
  scalar_t* gp = save ? gates.data_ptr<scalar_t>() : nullptr;
  scalar_t* cellp = save ? cells.data_ptr<scalar_t>() : nullptr;
  const int64_t* len = lens.data();

  zero_reset_rows(reset, 0, B, reverse, len, B, hbuf[0], P, 0, P);
  zero_reset_rows(reset, 0, B, reverse, len, B, cp, H, 0, H);

  const StepSplit split{H, P, kStepColumns<scalar_t>};
  const int threads =
      split.threads(B, w_gate[0].packed() && (!w_hr_t || w_hr_t->packed()));
  run_team(threads, [&](const Team& team) {
    const auto [u0, u1, p0, p1] = split.range(team);
    int64_t nb = B;  // samples still running: lengths are sorted decreasing
    for (int64_t s = 0; s < T; ++s) {
      while (nb > 0 && len[nb - 1] <= s) --nb;
      if (nb == 0) break;
      const scalar_t* h_cur = hbuf[s % 2];
      scalar_t* h_next = hbuf[(s + 1) % 2];
      for (int64_t q = 0; q < 4; ++q)
        w_gate[q].multiply(nb, h_cur, P, Rp + q * H, 4 * H, u0, u1);
      gate_pass<scalar_t>(d, s, nb, reverse, len, Gp, Rp, cp, d.proj ? rp : h_next,
                          d.proj ? nullptr : yp, gp, cellp, u0, u1);
      zero_reset_rows(reset, s + 1, nb, reverse, len, B, cp, H, u0, u1);
      if (!d.proj) {
        zero_reset_rows(reset, s + 1, nb, reverse, len, B, h_next, P, u0, u1);
      } else {
        team.barrier();  // the projection reads all of r
        w_hr_t->multiply(nb, rp, H, h_next, P, p0, p1);
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t t = step_time(s, len[b], reverse);
          std::copy(h_next + b * P + p0, h_next + b * P + p1, yp + (t * B + b) * P + p0);
        }
        zero_reset_rows(reset, s + 1, nb, reverse, len, B, h_next, P, p0, p1);
      }
      team.barrier();  // the next step reads all of h_next
    }
  });
  // A sample's last h is in the buffer its step count points at.
  for (int64_t b = 0; b < B; ++b) {
    const int64_t steps = std::min(len[b], T);
    if (steps % 2 == 1) std::copy(hbuf[1] + b * P, hbuf[1] + (b + 1) * P, hbuf[0] + b * P);
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

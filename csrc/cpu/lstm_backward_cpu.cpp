#include <ATen/Dispatch.h>

#include <algorithm>

#include "../lstm_args.h"
#include "../lstm_math.h"
#include "../lstm_setup.h"
#include "gate_rows.h"
#include "lstm_cpu.h"
#include "panel_gemm.h"
#include "step_team.h"

namespace rnnkernels {
namespace {

template <typename scalar_t>
struct BackwardBuffers {
  const scalar_t* grad_y;  // (T, B, P) or null
  const scalar_t* h0;      // (B, P)
  const scalar_t* c0;      // (B, H)
  const scalar_t* y;       // (T, B, P)
  const scalar_t* gates;   // (T, B, 4H)
  const scalar_t* cells;   // (T, B, H)
  const bool* reset;       // (T, B) or null
  scalar_t* dG;            // (T, B, 4H) out: pre-activation gradients
  scalar_t* h_prev;        // (T, B, P) out: the h each step multiplied w_hh by
  scalar_t* dh_all;        // (T, B, P) out with a projection: dL/dy_t in total
  scalar_t* r_all;         // (T, B, H) out with a projection: o * tanh(c)
  scalar_t* dh;            // (B, P) carried gradient of h
  scalar_t* dc;            // (B, H) carried gradient of c
  const scalar_t* dr;      // (B, H) with a projection: dh pushed through w_hr
};

// Whether gradient stops between processing steps s-1 and s for sample b.
inline bool cut_before(int64_t s, int64_t len, bool reverse, int64_t window,
                       const bool* reset, int64_t b, int64_t B) {
  return window_cut(s, len, reverse, window) ||
         reset_before(s, len, reverse, reset ? reset + b : nullptr, B);
}

// Columns [j0, j1) of step s's row work: adds the output gradient to the
// carried dh and records what the weight gradients need, the h this step
// read (zero after a reset) and, with a projection, the total dh.
template <typename scalar_t>
void step_rows(const LstmDims& d, int64_t s, int64_t nb, bool reverse,
               const int64_t* lens, const BackwardBuffers<scalar_t>& buf,
               int64_t j0, int64_t j1) {
  const int64_t B = d.B, P = d.P;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t t = step_time(s, lens[b], reverse);
    scalar_t* dh = buf.dh + b * P;
    if (buf.grad_y != nullptr) {
      const scalar_t* gy = buf.grad_y + (t * B + b) * P;
      for (int64_t j = j0; j < j1; ++j) dh[j] += gy[j];
    }
    if (buf.dh_all != nullptr)
      std::copy(dh + j0, dh + j1, buf.dh_all + (t * B + b) * P + j0);
    scalar_t* hp = buf.h_prev + (t * B + b) * P;
    if (reset_before(s, lens[b], reverse, buf.reset ? buf.reset + b : nullptr, B)) {
      std::fill(hp + j0, hp + j1, scalar_t(0));
    } else {
      const scalar_t* src =
          s == 0 ? buf.h0 + b * P
                 : buf.y + (step_time(s - 1, lens[b], reverse) * B + b) * P;
      std::copy(src + j0, src + j1, hp + j0);
    }
  }
}

// Units [u0, u1) of the fused backward pass of step s for the first nb
// samples.
template <typename scalar_t>
void gate_grad_pass(const LstmDims& d, int64_t s, int64_t nb, bool reverse,
                    int64_t window, const int64_t* lens,
                    const BackwardBuffers<scalar_t>& buf, int64_t u0, int64_t u1) {
  const int64_t B = d.B, H = d.H, P = d.P;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t len = lens[b];
    const int64_t tb = step_time(s, len, reverse) * B + b;
    const bool zeroed = reset_before(s, len, reverse, buf.reset ? buf.reset + b : nullptr, B);
    const scalar_t* c_prev = nullptr;  // a reset step starts from zero
    if (!zeroed) {
      c_prev = s == 0 ? buf.c0 + b * H
                      : buf.cells + (step_time(s - 1, len, reverse) * B + b) * H;
    }
    const BackwardRow<scalar_t> row{
        buf.gates + tb * 4 * H, buf.cells + tb * H, c_prev,
        buf.dr != nullptr ? buf.dr + b * H : buf.dh + b * P,
        buf.dc + b * H, buf.dG + tb * 4 * H,
        buf.r_all != nullptr ? buf.r_all + tb * H : nullptr,
        cut_before(s, len, reverse, window, buf.reset, b, B)};
    backward_row(row, u0, u1, H);
  }
}

// The time loop, backwards. Each thread owns a share of the units (the gate
// pass) and of h's columns (the product with w_hh), the same share when
// there is no projection; the threads meet once a step, when dG is complete,
// and once more before the projection's product reads all of dh.
template <typename scalar_t>
void backward_steps(const LstmDims& d, const std::vector<int64_t>& lens,
                    bool reverse, int64_t window, const at::Tensor& w_hh,
                    const std::optional<at::Tensor>& w_hr, const at::Tensor& dG,
                    scalar_t* dr, const BackwardBuffers<scalar_t>& buf) {
  const int64_t T = d.T, B = d.B, H = d.H, P = d.P;
  // Reverse directions with ragged lengths read a different time per sample,
  // so their rows of dG for one step are gathered before the product; two
  // buffers, since a thread may gather the next step while another still
  // reads this one.
  const bool ragged = reverse && dG.numel() > 0 && lens.front() != lens.back();
  at::Tensor gathered = ragged ? at::empty({2, B, 4 * H}, dG.options()) : at::Tensor();
  scalar_t* gp = ragged ? gathered.data_ptr<scalar_t>() : nullptr;
  // Packed once, multiplied every step.
  const StepMatrix<scalar_t> w_hh_m(w_hh);
  const std::optional<StepMatrix<scalar_t>> w_hr_m =
      d.proj ? std::make_optional<StepMatrix<scalar_t>>(*w_hr) : std::nullopt;
  const int64_t* len = lens.data();

  const StepSplit split{H, P, kStepColumns<scalar_t>};
  const int threads = split.threads(B, w_hh_m.packed() && (!w_hr_m || w_hr_m->packed()));
  run_team(threads, [&](const Team& team) {
    const auto [u0, u1, p0, p1] = split.range(team);
    int64_t nb = 0;
    for (int64_t s = T - 1; s >= 0; --s) {
      while (nb < B && len[nb] > s) ++nb;
      if (nb == 0) continue;
      step_rows<scalar_t>(d, s, nb, reverse, len, buf, p0, p1);
      if (d.proj) {
        team.barrier();  // the projection's product reads all of dh
        w_hr_m->multiply(nb, buf.dh, P, dr, H, u0, u1);
      }
      gate_grad_pass<scalar_t>(d, s, nb, reverse, window, len, buf, u0, u1);
      const scalar_t* dG_step;
      if (ragged) {
        scalar_t* dst = gp + (s % 2) * B * 4 * H;
        for (int64_t b = 0; b < nb; ++b) {
          const scalar_t* src = buf.dG + (step_time(s, len[b], reverse) * B + b) * 4 * H;
          for (int64_t q = 0; q < 4; ++q)
            std::copy(src + q * H + u0, src + q * H + u1, dst + b * 4 * H + q * H + u0);
        }
        dG_step = dst;
      } else {
        // Every running sample is at the same time index.
        dG_step = buf.dG + step_time(s, len[0], reverse) * B * 4 * H;
      }
      team.barrier();  // the product reads all of this step's dG
      w_hh_m.multiply(nb, dG_step, 4 * H, buf.dh, P, p0, p1);
      for (int64_t b = 0; b < nb; ++b) {
        if (cut_before(s, len[b], reverse, window, buf.reset, b, B))
          std::fill(buf.dh + b * P + p0, buf.dh + b * P + p1, scalar_t(0));
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
lstm_backward_cpu(const std::optional<at::Tensor>& grad_y,
                  const std::optional<at::Tensor>& grad_hn,
                  const std::optional<at::Tensor>& grad_cn,
                  const at::Tensor& x, const at::Tensor& h0,
                  const at::Tensor& c0, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                  const std::optional<at::Tensor>& reset,
                  const std::optional<at::Tensor>& lengths,
                  const at::Tensor& y, const at::Tensor& gates,
                  const at::Tensor& cells, int64_t window, bool reverse,
                  bool need_dx, bool need_bias) {
  const LstmDims d =
      check_forward_args(x, h0, c0, w_ih, w_hh, std::nullopt, std::nullopt,
                         w_hr, reset, lengths, window);
  check_backward_args(d, x, grad_y, grad_hn, grad_cn, y, gates, cells);
  const std::vector<int64_t> lens = lengths_vector(d, lengths);
  BackwardSetup st = setup_backward(d, x, grad_hn, grad_cn, lengths.has_value());
  at::Tensor dr = d.proj ? at::empty({d.B, d.H}, x.options()) : at::Tensor();
  const at::Tensor gy = grad_y ? grad_y->contiguous() : at::Tensor();
  const at::Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  const at::Tensor yc = y.contiguous(), gc = gates.contiguous(),
                   cc = cells.contiguous();
  const at::Tensor rc = reset ? reset->contiguous() : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkernels_lstm_backward_cpu", [&] {
    BackwardBuffers<scalar_t> buf{
        grad_y ? gy.const_data_ptr<scalar_t>() : nullptr,
        h0c.const_data_ptr<scalar_t>(),
        c0c.const_data_ptr<scalar_t>(),
        yc.const_data_ptr<scalar_t>(),
        gc.const_data_ptr<scalar_t>(),
        cc.const_data_ptr<scalar_t>(),
        reset ? rc.const_data_ptr<bool>() : nullptr,
        st.dG.data_ptr<scalar_t>(),
        st.h_prev.data_ptr<scalar_t>(),
        d.proj ? st.dh_all.data_ptr<scalar_t>() : nullptr,
        d.proj ? st.r_all.data_ptr<scalar_t>() : nullptr,
        st.dh.data_ptr<scalar_t>(),
        st.dc.data_ptr<scalar_t>(),
        d.proj ? dr.const_data_ptr<scalar_t>() : nullptr};
    backward_steps<scalar_t>(d, lens, reverse, window, w_hh, w_hr, st.dG,
                             d.proj ? dr.data_ptr<scalar_t>() : nullptr, buf);
  });

  return finish_backward(d, x, w_ih, st, need_dx, need_bias);
}

}  // namespace rnnkernels

// The CPU forward time loop of one layer-direction.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

#include "../lstm_math.h"
#include "gate_rows.h"
#include "lstm_cpu.h"
#include "panel_gemm.h"
#include "step_team.h"
#include "workspace.h"

namespace rnnkernels {
namespace {

// The flops of an input projection from which a loop that runs on one
// thread shares it with ATen's other threads.
constexpr double kShareProjectionFlops = 1e6;

// Steps whose input projection one pass computes: enough rows for the
// tiles to run at speed, and few enough that the pre-activations stay in
// cache from the projection to the gate pass (a projection of all steps
// first writes them to memory and the gate pass reads them back, about a
// sixth of an inference call at B64 H64). Each pass reads all of w_ih's
// panels, from L3 for a large H, so the cap is L3's: a 512 KiB one (L2)
// made T35 inference 10% slower at B8 H1024 (passes of 4 steps, not 16) and
// 6-10% at B32 H1024. More than 128 rows a pass made B20 H650 slower.
int64_t projection_steps(int64_t B, int64_t H, size_t item) {
  constexpr int64_t kRows = 128, kBytes = int64_t(4) << 20;
  const int64_t by_rows = (kRows + B - 1) / B;
  const int64_t by_bytes = kBytes / std::max<int64_t>(1, B * 4 * H * static_cast<int64_t>(item));
  return std::max<int64_t>(1, std::min(by_rows, by_bytes));
}

// Raw views of one forward loop's tensors, read without ATen inside a team.
template <typename T>
struct ForwardBuffers {
  const StepRows& steps;
  bool reverse;
  const bool* reset;
  int64_t H, P;
  const T* bias;       // (4H) or null
  T* R;                // (B, 4H): h @ w_hh^T of the step
  T* c;                // (B, H)
  T* r;                // (B, H): o * tanh(c) before a projection, or null
  T* y;                // (rows, ldy), or null when y16 is set
  c10::BFloat16* y16;  // (rows, ldy) or null: the output of a bfloat16 call
  int64_t ldy;
  T* cells;  // (rows, H) or null: when set, the gates and cells are saved

  // Zeroes columns [j0, j1) of the rows (stride n) of the samples of r whose
  // state is reset before time t.
  void zero_reset_rows(int64_t t, T* rows, int64_t n, int64_t j0, int64_t j1,
                       const StepSplit::Range& r) const {
    if (reset == nullptr || t < 0 || t >= steps.T()) return;
    const int64_t nb = steps.batch(t), next = steps.batch(t + 1);
    for (int64_t b = r.b0; b < r.b0 + r.rows(nb); ++b) {
      if (reset_before(step_edge(t, b, reverse, next), reverse, reset, steps.B(), b))
        std::fill(rows + b * n + j0, rows + b * n + j1, T(0));
    }
  }

  // r's units and samples of the gate pass of time t, whose pre-activations
  // start at G: activations, cell update, and h (or r) into h_next.
  void gate_pass(int64_t t, T* G, T* h_next, const StepSplit::Range& rg) const {
    const int64_t nb = steps.batch(t), off = steps.offset(t);
    for (int64_t b = rg.b0; b < rg.b0 + rg.rows(nb); ++b) {
      const int64_t row = off + b;
      T* g = G + b * 4 * H;
      const bool out = r == nullptr;  // else h is the projection's
      const ForwardRow<T> w{g,
                            R + b * 4 * H,
                            c + b * H,
                            out ? h_next + b * P : r + b * H,
                            out && y != nullptr ? y + row * ldy : nullptr,
                            cells != nullptr ? g : nullptr,
                            cells != nullptr ? cells + row * H : nullptr,
                            out && y16 != nullptr ? y16 + row * ldy : nullptr};
      forward_row(w, rg.u0, rg.u1, H);
    }
  }
};

template <typename T>
void forward_steps(const LayerForward& f) {
  if (forward_unit_major<T>(f)) return;
  const StepRows& steps = *f.steps;
  const int64_t T_ = steps.T(), B = steps.B(), H = f.c.size(1), P = f.h.size(1);
  const bool proj = f.w_hr.defined();
  const bool save = f.gates.defined();
  // A bfloat16 call's products (BFloat16Products) read x rounded once, and h
  // rounded once a step by each thread, not once per gate.
  const bool rounds = std::is_same_v<T, float> && BFloat16Products::active();
  const bool packed = rounds || panel_gemm_enabled(f.c.scalar_type());
  // A bfloat16 x and y (BFloat16Weights) are read only through rounded rows
  // and written only rounded.
  const bool y16 = f.y.scalar_type() == at::kBFloat16;
  TORCH_INTERNAL_ASSERT(rounds || (f.x.scalar_type() == f.c.scalar_type() && !y16));
  const int64_t step_bytes = panel_bytes<T>(f.w_hh) + panel_bytes<T>(f.w_hr);
  const StepSplit split(steps, H, P, kStepColumns<T>, panel_bytes<T>(f.w_ih) + step_bytes,
                        step_bytes, packed);
  // Packed once, multiplied every step. Split by units, per gate, so that a
  // thread's columns of the products are its units in all four gates; else
  // (or on one thread) whole, one product over all 4H columns: fewer partly
  // filled panels, fewer calls.
  const int64_t parts = split.by_samples() || split.threads == 1 ? 1 : 4, width = 4 * H / parts;
  std::vector<at::Tensor> weights;
  for (const at::Tensor& w : {f.w_ih, f.w_hh})
    for (int64_t q = 0; q < parts; ++q) weights.push_back(w.narrow(0, q * width, width).t());
  if (proj) weights.push_back(f.w_hr.t());
  const std::vector<StepMatrix<T>> matrices = StepMatrix<T>::together(weights);
  const StepMatrix<T>* const w_in = matrices.data();  // [parts], then w_gate's
  const StepMatrix<T>* const w_gate = w_in + parts;
  const StepMatrix<T>* const w_hr_t = proj ? &matrices.back() : nullptr;
  const at::Tensor x = f.x.contiguous();
  const at::Tensor bias = f.bias.defined() ? f.bias.contiguous() : at::Tensor();
  const int64_t I = x.size(1), chunk = projection_steps(B, H, sizeof(T));
  // The pre-activations of a pass of steps: in the saved gates when saving
  // (the gate pass overwrites them with the gates), else in a buffer for one
  // pass.
  at::Tensor G = save ? f.gates : workspace_empty({std::min(chunk, T_) * B, 4 * H}, f.c.options());
  at::Tensor R = at::empty({B, 4 * H}, f.c.options());
  at::Tensor r = proj ? at::empty({B, H}, f.c.options()) : at::Tensor();
  // h alternates between two buffers, so a step's product reads all of the
  // previous h while the team writes the next. Both start as h0: a reverse
  // direction's samples join at their own last step and read whichever.
  at::Tensor h_other = f.h.clone();
  T* const hbuf[2] = {f.h.data_ptr<T>(), h_other.data_ptr<T>()};
  const ForwardBuffers<T> buf{steps,
                              f.reverse,
                              f.reset,
                              H,
                              P,
                              bias.defined() ? bias.const_data_ptr<T>() : nullptr,
                              R.data_ptr<T>(),
                              f.c.data_ptr<T>(),
                              proj ? r.data_ptr<T>() : nullptr,
                              y16 ? nullptr : f.y.data_ptr<T>(),
                              y16 ? f.y.data_ptr<c10::BFloat16>() : nullptr,
                              f.y.stride(0),
                              f.cells.defined() ? f.cells.data_ptr<T>() : nullptr};
  const T* const x_rows = rounds ? nullptr : x.const_data_ptr<T>();
  T* const G_rows = G.data_ptr<T>();
  const int64_t I2 = padded_depth<c10::BFloat16>(I), P2 = padded_depth<c10::BFloat16>(P),
                H2 = padded_depth<c10::BFloat16>(H);
  // Rows of h (width P) or of r (width H) rounded for the products.
  auto round_rows = [&](const T* a, int64_t rows, int64_t width, c10::BFloat16* out) {
    if constexpr (std::is_same_v<T, float>)
      rows_to_bf16(a, rows, width, width, out, padded_depth<c10::BFloat16>(width));
  };
  const at::Tensor x16 = rounds ? bf16_rows(x) : at::Tensor();
  const c10::BFloat16* const x16_rows = rounds ? x16.const_data_ptr<c10::BFloat16>() : nullptr;

  const int64_t t_first = f.reverse ? T_ - 1 : 0;
  const StepSplit::Range all{0, H, 0, P, 0, B, false};
  buf.zero_reset_rows(t_first, hbuf[0], P, 0, P, all);
  buf.zero_reset_rows(t_first, buf.c, H, 0, H, all);

  // Each thread's rounded h, then r for the projection; allocated here,
  // since nothing may throw in a team.
  const int64_t rounded = B * std::max(P2, proj ? H2 : 0);
  std::vector<c10::BFloat16> h16_all(rounds ? split.threads * rounded : 0);
  // Whether a loop on one thread shares its input projections with ATen's
  // other threads: only outside a team and on packed panels (at::mm, the
  // fallback, must not run on threads without the caller's state).
  const bool share_projection =
      split.threads == 1 && packed && at::get_num_threads() > 1 && !at::in_parallel_region();
  run_team(split.threads, [&](const Team& team) {
    const StepSplit::Range rg = split.range(team);
    const auto [u0, u1, p0, p1, b0, b1, shared] = rg;
    // Whether this thread projects every sample's rows, so that a pass of
    // steps is one product over contiguous rows (else one product a step,
    // of only this thread's samples: a thread of a team of one had B rows a
    // product, one at B1, at a fraction of the tiles' rate).
    const bool every_sample = shared || (b0 == 0 && b1 >= B);
    const int64_t n0 = parts == 1 ? 0 : u0, n1 = parts == 1 ? width : u1;  // a part's columns
    int64_t g_row0 = 0;  // the packed row G_rows starts at (when not saving)
    c10::BFloat16* const h16 = rounds ? h16_all.data() + team.id * rounded : nullptr;
    // Row 0 of the pre-activations of time t, the k-th step of the loop:
    // packed rows when saving or projecting every sample, else a slot of B
    // rows a step, a row per sample, so that threads apart in time never
    // share one.
    auto g_at = [&](int64_t t, int64_t k) {
      if (save || every_sample) return G_rows + (steps.offset(t) - g_row0) * 4 * H;
      return G_rows + (k % chunk) * B * 4 * H;
    };
    // This thread's columns [c0, c1) of each part of the pre-activations g of
    // x's rows [row, row + m).
    auto project_columns = [&](int64_t row, int64_t m, T* g, int64_t c0, int64_t c1) {
      for (int64_t q = 0; q < parts; ++q) {
        const T* bias_q = buf.bias != nullptr ? buf.bias + q * width : nullptr;
        if (rounds) {
          w_in[q].multiply(m, x16_rows + row * I2, I2, g + q * width, 4 * H, c0, c1, bias_q);
        } else {
          w_in[q].multiply(m, x_rows + row * I, I, g + q * width, 4 * H, c0, c1, bias_q);
        }
      }
    };
    // This thread's columns of them. A loop that runs on one thread
    // (steps too small to split) shares a large enough product's panels with
    // ATen's other threads: T100 B4 I1024 H64 inference went from 0.78x to
    // 1.46-1.49x nn.LSTM on 2 threads, the streaming T100 B1 H64 from
    // 2.13-2.21x to 2.33-2.41x.
    auto project = [&](int64_t row, int64_t m, T* g) {
      if (share_projection && 2.0 * m * I * 4 * H >= kShareProjectionFlops) {
        const int64_t panels = (n1 - n0 + kStepColumns<T> - 1) / kStepColumns<T>;
        at::parallel_for(0, panels, 1, [&](int64_t k0, int64_t k1) {
          project_columns(row, m, g, n0 + k0 * kStepColumns<T>,
                          std::min(n1, n0 + k1 * kStepColumns<T>));
        });
      } else {
        project_columns(row, m, g, n0, n1);
      }
    };
    for (int64_t k = 0; k < T_; ++k) {
      const int64_t t = f.reverse ? T_ - 1 - k : k;
      const int64_t t_next = f.reverse ? t - 1 : t + 1;
      if (k % chunk == 0) {
        // The pre-activations of the next pass of steps, whose rows are
        // contiguous in either direction: all of them for a thread with
        // every sample, else this thread's samples' rows of each step.
        const int64_t t_end =
            f.reverse ? std::max<int64_t>(0, t - chunk + 1) : std::min(T_ - 1, t + chunk - 1);
        const int64_t lo = std::min(t, t_end), hi = std::max(t, t_end);
        const int64_t row0 = steps.offset(lo);
        g_row0 = save ? 0 : row0;
        if (every_sample) {
          project(row0, steps.offset(hi) + steps.batch(hi) - row0, g_at(lo, 0));
        } else {
          for (int64_t s = lo; s <= hi; ++s)
            project(steps.offset(s) + b0, rg.rows(steps.batch(s)),
                    g_at(s, k + std::abs(s - t)) + b0 * 4 * H);
        }
      }
      const int64_t m = rg.rows(steps.batch(t));
      const T* h_cur = hbuf[k % 2] + b0 * P;
      T* h_next = hbuf[(k + 1) % 2];
      T* R = buf.R + b0 * 4 * H;
      if (rounds) round_rows(h_cur, m, P, h16);
      for (int64_t q = 0; q < parts; ++q) {
        if (rounds) {
          w_gate[q].multiply(m, h16, P2, R + q * width, 4 * H, n0, n1);
        } else {
          w_gate[q].multiply(m, h_cur, P, R + q * width, 4 * H, n0, n1);
        }
      }
      buf.gate_pass(t, g_at(t, k), h_next, rg);
      buf.zero_reset_rows(t_next, buf.c, H, u0, u1, rg);
      if (!proj) {
        buf.zero_reset_rows(t_next, h_next, P, u0, u1, rg);
      } else {
        if (shared) team.barrier();  // the projection reads all of r
        if (rounds) {                // h16 is free again: the products above have read it
          round_rows(buf.r + b0 * H, m, H, h16);
          w_hr_t->multiply(m, h16, H2, h_next + b0 * P, P, p0, p1);
        } else {
          w_hr_t->multiply(m, buf.r + b0 * H, H, h_next + b0 * P, P, p0, p1);
        }
        const int64_t off = steps.offset(t);
        for (int64_t b = b0; b < b0 + m; ++b) {
          const T* h = h_next + b * P;
          if (y16) {
            std::transform(h + p0, h + p1, buf.y16 + (off + b) * buf.ldy + p0,
                           [](T v) { return c10::BFloat16(v); });
          } else {
            std::copy(h + p0, h + p1, buf.y + (off + b) * buf.ldy + p0);
          }
        }
        buf.zero_reset_rows(t_next, h_next, P, p0, p1, rg);
      }
      if (shared) team.barrier();  // the next step reads all of h_next
    }
  });
  // A sample's last h is in the buffer its step count points at: going
  // forward its own length, going back T for everyone (all end at t = 0).
  for (int64_t b = 0; b < B; ++b) {
    const int64_t ran = f.reverse ? T_ : steps.length(b);
    if (ran % 2 == 1) std::copy(hbuf[1] + b * P, hbuf[1] + (b + 1) * P, hbuf[0] + b * P);
  }
}

}  // namespace

void forward_layer_cpu(at::ArrayRef<LayerForward> dirs) {
  AT_DISPATCH_FLOATING_TYPES(dirs[0].c.scalar_type(), "rnnkernels_lstm_forward_cpu", [&] {
    const LayerForward& f = dirs[0];
    const int64_t B = f.steps->B(), H = f.c.size(1), P = f.h.size(1);
    const int64_t weight_bytes = panel_bytes<scalar_t>(f.w_ih) + panel_bytes<scalar_t>(f.w_hh) +
                                 panel_bytes<scalar_t>(f.w_hr);
    run_directions(dirs.size(), B, H, P, weight_bytes,
                   [&](int64_t k) { forward_steps<scalar_t>(dirs[k]); });
  });
}

}  // namespace rnnkernels

// The CPU backward time loop of one layer-direction.
#include <ATen/Dispatch.h>

#include <algorithm>

#include "../lstm_math.h"
#include "gate_rows.h"
#include "lstm_cpu.h"
#include "panel_gemm.h"
#include "step_team.h"

namespace rnnkernels {
namespace {

// Raw views of one backward loop's tensors, read without ATen inside a team.
template <typename T>
struct BackwardBuffers {
  const StepRows& steps;
  bool reverse;
  int64_t window;
  const bool* reset;
  int64_t H, P;
  const T* gates;  // (rows, 4H)
  const T* cells;  // (rows, H)
  const T* y;      // (rows, ldy)
  int64_t ldy;
  const T* h0;      // (B, P)
  const T* c0;      // (B, H)
  const T* grad_y;  // (rows, ld_gy) or null
  int64_t ld_gy;
  T* dh;                // (B, P) carried gradient of h
  T* dc;                // (B, H) carried gradient of c
  T* dr;                // (B, H) with a projection: dh pushed through w_hr
  T* dG;                // (rows, 4H), or null when dG is kept in bfloat16
  c10::BFloat16* dG16;  // (rows, 4H) or null: dG rounded for bfloat16 products
  T* dG_sums;           // (B, 4H) or null: each sample's dG summed over its steps
  T* h_prev;            // (rows, P)
  T* dh_all;            // (rows, P) or null
  T* r_all;             // (rows, H) or null

  StepEdge edge(int64_t t, int64_t b) const { return step_edge(t, b, reverse, steps.batch(t + 1)); }
  bool cut(int64_t t, int64_t b) const {
    return cut_before(edge(t, b), reverse, window, reset, steps.B(), b);
  }

  // Columns [j0, j1) of time t's row work: adds the output gradient to the
  // carried dh and records what the weight gradients need: the h this step
  // read (zero after a reset) and, with a projection, the total dh.
  void step_rows(int64_t t, int64_t j0, int64_t j1, const StepSplit::Range& r) const {
    const int64_t nb = steps.batch(t), off = steps.offset(t);
    const int64_t off_prev = steps.offset(std::max<int64_t>(0, previous_time(t, reverse)));
    for (int64_t b = r.b0; b < r.b0 + r.rows(nb); ++b) {
      const int64_t row = off + b;
      T* d = dh + b * P;
      if (grad_y != nullptr) {
        const T* gy = grad_y + row * ld_gy;
        for (int64_t j = j0; j < j1; ++j) d[j] += gy[j];
      }
      if (dh_all != nullptr) std::copy(d + j0, d + j1, dh_all + row * P + j0);
      T* hp = h_prev + row * P;
      const StepEdge e = edge(t, b);
      if (reset_before(e, reverse, reset, steps.B(), b)) {
        std::fill(hp + j0, hp + j1, T(0));
      } else {
        const T* src = e.continued ? y + (off_prev + b) * ldy : h0 + b * P;
        std::copy(src + j0, src + j1, hp + j0);
      }
    }
  }

  // r's units and samples of the fused backward pass of time t; a dG kept
  // in bfloat16 goes through `scratch` (4H), this thread's own.
  void gate_grad_pass(int64_t t, const StepSplit::Range& r, T* scratch) const {
    const int64_t nb = steps.batch(t), off = steps.offset(t);
    const int64_t off_prev = steps.offset(std::max<int64_t>(0, previous_time(t, reverse)));
    for (int64_t b = r.b0; b < r.b0 + r.rows(nb); ++b) {
      const int64_t row = off + b;
      const StepEdge e = edge(t, b);
      const T* c_prev = nullptr;  // a reset step starts from zero
      if (!reset_before(e, reverse, reset, steps.B(), b))
        c_prev = e.continued ? cells + (off_prev + b) * H : c0 + b * H;
      const BackwardRow<T> w{gates + row * 4 * H,
                             cells + row * H,
                             c_prev,
                             dr != nullptr ? dr + b * H : dh + b * P,
                             dc + b * H,
                             dG16 != nullptr ? scratch : dG + row * 4 * H,
                             r_all != nullptr ? r_all + row * H : nullptr,
                             cut(t, b),
                             dG_sums != nullptr ? dG_sums + b * 4 * H : nullptr};
      backward_row(w, r.u0, r.u1, H);
      if constexpr (std::is_same_v<T, float>) {
        if (dG16 != nullptr) {
          for (int64_t q = 0; q < 4; ++q)
            rows_to_bf16(scratch + q * H + r.u0, 1, r.u1 - r.u0, 0,
                         dG16 + row * 4 * H + q * H + r.u0, r.u1 - r.u0);
        }
      }
    }
  }
};

// The time loop, in the reverse order of the forward's. Split by units
// (StepSplit), each thread owns a share of the units (the gate pass) and of
// h's columns (the product with w_hh), the same share without a projection,
// and the threads meet once a step, when dG is complete, and once more
// before the projection's product reads all of dh. Split by samples, they
// never meet.
template <typename T>
void backward_steps(const LayerBackward& lb) {
  const StepRows& steps = *lb.steps;
  const int64_t T_ = steps.T(), B = steps.B(), H = lb.dc.size(1), P = lb.dh.size(1);
  const bool proj = lb.w_hr.defined();
  // Packed once, multiplied every step.
  const std::vector<StepMatrix<T>> matrices = StepMatrix<T>::together(
      proj ? std::vector<at::Tensor>{lb.w_hh, lb.w_hr} : std::vector<at::Tensor>{lb.w_hh});
  const StepMatrix<T>& w_hh_m = matrices[0];
  const StepMatrix<T>* const w_hr_m = proj ? &matrices[1] : nullptr;
  at::Tensor dr = proj ? at::empty({B, H}, lb.dh.options()) : at::Tensor();
  // dG in bfloat16 (the input's dtype under BFloat16Weights): the products
  // that read it, in the loop and after it, round it to that anyway.
  const bool dG16 = lb.dG.scalar_type() == at::kBFloat16;
  TORCH_INTERNAL_ASSERT(!dG16 || (std::is_same_v<T, float> && BFloat16Products::active()));
  at::Tensor dG_sums = lb.dG_sum.defined() ? at::zeros({B, 4 * H}, lb.dh.options()) : at::Tensor();
  const BackwardBuffers<T> buf{steps,
                               lb.reverse,
                               lb.window,
                               lb.reset,
                               H,
                               P,
                               lb.gates.const_data_ptr<T>(),
                               lb.cells.const_data_ptr<T>(),
                               lb.y.const_data_ptr<T>(),
                               lb.y.stride(0),
                               lb.h0.const_data_ptr<T>(),
                               lb.c0.const_data_ptr<T>(),
                               lb.grad_y.defined() ? lb.grad_y.const_data_ptr<T>() : nullptr,
                               lb.grad_y.defined() ? lb.grad_y.stride(0) : 0,
                               lb.dh.data_ptr<T>(),
                               lb.dc.data_ptr<T>(),
                               proj ? dr.data_ptr<T>() : nullptr,
                               dG16 ? nullptr : lb.dG.data_ptr<T>(),
                               dG16 ? lb.dG.data_ptr<c10::BFloat16>() : nullptr,
                               dG_sums.defined() ? dG_sums.data_ptr<T>() : nullptr,
                               lb.h_prev.data_ptr<T>(),
                               proj ? lb.dh_all.data_ptr<T>() : nullptr,
                               proj ? lb.r_all.data_ptr<T>() : nullptr};

  const bool packed = w_hh_m.packed() && (!w_hr_m || w_hr_m->packed());
  const int64_t weight_bytes = panel_bytes<T>(lb.w_hh) + panel_bytes<T>(lb.w_hr);
  const StepSplit split(steps, H, P, kStepColumns<T>, weight_bytes, weight_bytes, packed);
  // Each thread's float row of dG before it is rounded, and its rows of dh
  // rounded for the projection's product; allocated here, since nothing may
  // throw in a team.
  const bool rounds = std::is_same_v<T, float> && BFloat16Products::active();
  const int64_t P2 = padded_depth<c10::BFloat16>(P);
  std::vector<T> scratch_all(dG16 ? split.threads * 4 * H : 0);
  std::vector<c10::BFloat16> dh16_all(rounds && proj ? split.threads * B * P2 : 0);
  run_team(split.threads, [&](const Team& team) {
    const StepSplit::Range r = split.range(team);
    const auto [u0, u1, p0, p1, b0, b1, shared] = r;
    T* const scratch = dG16 ? scratch_all.data() + team.id * 4 * H : nullptr;
    c10::BFloat16* const dh16 = dh16_all.empty() ? nullptr : dh16_all.data() + team.id * B * P2;
    for (int64_t k = 0; k < T_; ++k) {
      const int64_t t = lb.reverse ? k : T_ - 1 - k;
      const int64_t m = r.rows(steps.batch(t));
      buf.step_rows(t, p0, p1, r);
      if (proj) {
        if (shared) team.barrier();  // the projection's product reads all of dh
        if (dh16 != nullptr) {
          if constexpr (std::is_same_v<T, float>) rows_to_bf16(buf.dh + b0 * P, m, P, P, dh16, P2);
          w_hr_m->multiply(m, dh16, P2, buf.dr + b0 * H, H, u0, u1);
        } else {
          w_hr_m->multiply(m, buf.dh + b0 * P, P, buf.dr + b0 * H, H, u0, u1);
        }
      }
      buf.gate_grad_pass(t, r, scratch);
      if (shared) team.barrier();  // the product reads all of this step's dG
      // The samples of a step are contiguous rows of dG.
      const int64_t row0 = steps.offset(t) + b0;
      if (dG16) {
        w_hh_m.multiply(m, buf.dG16 + row0 * 4 * H, 4 * H, buf.dh + b0 * P, P, p0, p1);
      } else {
        w_hh_m.multiply(m, buf.dG + row0 * 4 * H, 4 * H, buf.dh + b0 * P, P, p0, p1);
      }
      for (int64_t b = b0; b < b0 + m; ++b) {
        if (buf.cut(t, b)) std::fill(buf.dh + b * P + p0, buf.dh + b * P + p1, T(0));
      }
    }
  });
  if (dG_sums.defined()) {
    // The bias gradient: the samples' sums added in sample order, the same
    // bits however the loop was split.
    T* const out = lb.dG_sum.data_ptr<T>();
    const T* const sums = dG_sums.const_data_ptr<T>();
    std::copy(sums, sums + 4 * H, out);
    for (int64_t b = 1; b < B; ++b)
      for (int64_t n = 0; n < 4 * H; ++n) out[n] += sums[b * 4 * H + n];
  }
}

}  // namespace

void backward_layer_cpu(at::ArrayRef<LayerBackward> dirs) {
  AT_DISPATCH_FLOATING_TYPES(dirs[0].dh.scalar_type(), "rnnkernels_lstm_backward_cpu", [&] {
    const LayerBackward& b = dirs[0];
    const int64_t B = b.steps->B(), H = b.dc.size(1), P = b.dh.size(1);
    const int64_t weight_bytes = panel_bytes<scalar_t>(b.w_hh) + panel_bytes<scalar_t>(b.w_hr);
    run_directions(dirs.size(), B, H, P, weight_bytes,
                   [&](int64_t k) { backward_steps<scalar_t>(dirs[k]); });
  });
}

}  // namespace rnnkernels

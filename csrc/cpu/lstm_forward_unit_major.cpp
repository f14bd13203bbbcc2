// A CPU forward time loop whose batch fills whole panels, run the other way
// round: every product is weight @ state^T, the weight read as it lies
// (multiply_weight_rows), and the pre-activations, states and inputs are
// unit-major, (units, B). Nothing of the weights is packed; the inputs and
// outputs (and a training forward's saved gates) are transposed instead,
// about B * (I + 6H) values a step against 4H * (I + H) of weights once. Each
// value is the same sum in the same order as in the loop of
// lstm_forward_cpu.cpp, so the outputs are the same bits.
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../lstm_math.h"
#include "gate_rows.h"
#include "lstm_cpu.h"
#include "panel_gemm.h"
#include "step_team.h"
#include "workspace.h"

namespace rnnkernels {
namespace {

// Bytes of pre-activations one pass of input projections writes: few
// enough to stay in L2 for the gate pass (at T10-T35 B32 H512, one step a
// pass, 256 KiB, ran 1-5% faster than passes of 1-16 MiB). But a w_ih too
// large to stay in L3 from one pass to the next (a quarter of 32 MiB) comes
// from memory every pass: there passes of up to 16 MiB (T10 and T35 at B32
// H1024, 16 MiB of w_ih: one step a pass ran 15-16% slower than that, 4 MiB
// passes 3-5%).
constexpr int64_t kNearPassBytes = int64_t(256) << 10, kFarPassBytes = int64_t(16) << 20,
                  kFarWeightBytes = int64_t(8) << 20;

// out[j * ldo + i] = a[i * lda + j] for i < rows, j < cols: 16 x 16 blocks
// in AVX-512 registers for float where the CPU has them.
template <typename T>
void transpose(const T* a, int64_t lda, int64_t rows, int64_t cols, T* out, int64_t ldo) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (avx512_tile_f32(1, 1) != nullptr) {
      for (; i + 16 <= rows; i += 16) {
        int64_t j = 0;
        for (; j + 16 <= cols; j += 16)
          transpose_block(a + i * lda + j, lda, out + j * ldo + i, ldo);
        for (; j < cols; ++j)
          for (int64_t r = i; r < i + 16; ++r) out[j * ldo + r] = a[r * lda + j];
      }
    }
  }
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[j * ldo + i] = a[i * lda + j];
}

// Whether RNNKERNELS_CPU_WEIGHTS=packed asks for the loop with packed
// weights everywhere, to compare.
bool packed_weights_forced() {
  const char* env = std::getenv("RNNKERNELS_CPU_WEIGHTS");
  return env != nullptr && std::strcmp(env, "packed") == 0;
}

}  // namespace

template <typename T>
bool forward_unit_major(const LayerForward& f) {
  const StepRows& steps = *f.steps;
  const int64_t T_ = steps.T(), B = steps.B(), H = f.c.size(1), I = f.x.size(1);
  const at::ScalarType dtype = f.c.scalar_type();
  const int64_t w_ih_bytes = f.w_ih.numel() * int64_t(sizeof(T));
  const bool save = f.gates.defined();  // a training forward
  // A batch of one panel (16) runs its tiles on half the accumulators: the
  // packed loop is faster there. H a multiple of 16 keeps the gate pass in
  // whole vectors in both loops (the other loop's last units of a smaller
  // remainder run in scalar code, which rounds differently).
  if (T_ == 0 || f.w_hr.defined() || B < 2 * kPanelWidth<T> || B % kPanelWidth<T> != 0 ||
      H % 16 != 0 || !panel_gemm_enabled(dtype) || BFloat16Products::active() ||
      packed_weights_forced())
    return false;
  // It wins by packing nothing, which pays where a call has fewer samples in
  // all (T * B) than the weights have rows (4H): transposing the inputs and
  // outputs (and a training forward's saved gates) then costs less than
  // packing the weights. Beyond, its inference steps run as fast as on
  // packed weights, or a little slower (eight rows of two panels a tile at
  // B32, where packed weights give eight rows of three), unless w_ih is too
  // large for L3 (kFarWeightBytes), where its long passes of input
  // projections read it less often. Measured on a Zen 5, its time over the
  // other loop's, inference: T10 B32 H512 0.92-0.97, T10 B64 H512 0.94-0.99,
  // T35 B32 H512 0.94-1.00; beyond, T100 B32 H512 0.99-1.02, T100 B64 H512
  // 0.98-1.00, T100 B32 H1024 0.96, T100 B64 H1024 0.97. A training step:
  // T10 B32 H512 0.955, H1024 0.963, T10 B64 H512 0.99, T35 B32 H1024 0.98;
  // beyond, T100 B32 H1024 1.03.
  if (T_ * B > 4 * H && (save || w_ih_bytes <= kFarWeightBytes)) return false;
  for (const at::Tensor& t : {f.x, f.y, f.w_ih, f.w_hh, save ? f.gates : f.x, save ? f.cells : f.x})
    if (t.scalar_type() != dtype) return false;
  for (int64_t t = 0; t < T_; ++t)
    if (steps.batch(t) != B) return false;  // packed sequences of unequal lengths
  const int64_t step_bytes = panel_bytes<T>(f.w_hh);
  const StepSplit split(steps, H, H, kStepColumns<T>, panel_bytes<T>(f.w_ih) + step_bytes,
                        step_bytes, true);
  // Nor where the other loop splits by samples, or runs on one thread and
  // shares its input projections with ATen's other threads.
  if (split.by_samples() ||
      (split.threads == 1 && at::get_num_threads() > 1 && !at::in_parallel_region()))
    return false;

  RECORD_FUNCTION("rnnkernels::forward_unit_major", {});  // which loop ran, for the profiler
  const at::Tensor x = f.x.contiguous(), w_ih = f.w_ih.contiguous(), w_hh = f.w_hh.contiguous();
  const at::Tensor bias = f.bias.defined() ? f.bias.contiguous() : at::Tensor();
  const int64_t pass_bytes = w_ih_bytes > kFarWeightBytes ? kFarPassBytes : kNearPassBytes;
  const int64_t chunk = std::clamp<int64_t>(pass_bytes / (4 * H * B * int64_t(sizeof(T))), 1, T_);
  // Unit-major: the pre-activations of a pass of steps (chunk, 4H, B), their
  // inputs (chunk, I, B) in two buffers (the threads transpose the next
  // pass's while the last step of this one runs), h @ w_hh^T of a step (4H,
  // B); h alternates between two buffers as in the other loop.
  const at::Tensor G = workspace_empty({chunk * 4 * H * B}, f.c.options());
  const at::Tensor XT = workspace_empty({2 * chunk * I * B}, f.c.options());
  const at::Tensor R = workspace_empty({4 * H * B}, f.c.options());
  const at::Tensor hT = at::empty({2, H * B}, f.c.options()),
                   cT = at::empty({H * B}, f.c.options());
  T* const g_all = G.data_ptr<T>();
  T* const xt = XT.data_ptr<T>();
  T* const r_all = R.data_ptr<T>();
  T* const hbuf[2] = {hT.data_ptr<T>(), hT.data_ptr<T>() + H * B};
  T* const c = cT.data_ptr<T>();
  const T* const x_rows = x.const_data_ptr<T>();
  const T* const wi = w_ih.const_data_ptr<T>();
  const T* const wh = w_hh.const_data_ptr<T>();
  const T* const b_all = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
  T* const y = f.y.data_ptr<T>();
  T* const gates = save ? f.gates.data_ptr<T>() : nullptr;
  T* const cells = save ? f.cells.data_ptr<T>() : nullptr;
  const int64_t ldy = f.y.stride(0);
  transpose(f.h.const_data_ptr<T>(), H, B, H, hbuf[0], B);
  transpose(f.c.const_data_ptr<T>(), H, B, H, c, B);

  // Zeroes units [u0, u1) of the unit-major rows of the samples whose state
  // is reset before time t.
  auto zero_resets = [&](int64_t t, T* rows, int64_t u0, int64_t u1) {
    if (f.reset == nullptr || t < 0 || t >= T_) return;
    for (int64_t b = 0; b < B; ++b) {
      if (!reset_before(step_edge(t, b, f.reverse, steps.batch(t + 1)), f.reverse, f.reset, B, b))
        continue;
      for (int64_t u = u0; u < u1; ++u) rows[u * B + b] = T(0);
    }
  };
  zero_resets(f.reverse ? T_ - 1 : 0, hbuf[0], 0, H);
  zero_resets(f.reverse ? T_ - 1 : 0, c, 0, H);

  run_team(split.threads, [&](const Team& team) {
    const StepSplit::Range rg = split.range(team);
    const int64_t u0 = rg.u0, u1 = rg.u1, units = std::max<int64_t>(0, u1 - u0);
    // This thread's share of the inputs to transpose: features [i0, i1).
    const int64_t i0 = I * team.id / team.size, i1 = I * (team.id + 1) / team.size;
    auto time_of = [&](int64_t k) { return f.reverse ? T_ - 1 - k : k; };
    // Rows [q * H + u0, q * H + u1) of each gate q: this thread's units.
    auto gate_rows = [&](const T* w, int64_t K, const T* b, int64_t blocks, int64_t b_block, T* out,
                         int64_t c_block, const T* bias_all) {
      for (int64_t q = 0; q < 4 && units > 0; ++q) {
        const int64_t row = q * H + u0;
        multiply_weight_rows<T>({units, K, w + row * K, K, b, B, B, out + row * B, B,
                                 bias_all != nullptr ? bias_all + row : nullptr, blocks, b_block,
                                 c_block});
      }
    };
    // The inputs of the pass of steps from loop step k: one of two buffers.
    auto pass_inputs = [&](int64_t k) { return xt + (k / chunk) % 2 * chunk * I * B; };
    // This thread's share of them, transposed into that buffer.
    auto transpose_inputs = [&](int64_t k) {
      T* const out = pass_inputs(k);
      for (int64_t s = 0; s < std::min(chunk, T_ - k); ++s)
        transpose(x_rows + steps.offset(time_of(k + s)) * I + i0, I, B, i1 - i0,
                  out + s * I * B + i0 * B, B);
    };
    transpose_inputs(0);
    team.barrier();  // every thread projects all of the samples
    for (int64_t k = 0; k < T_; ++k) {
      const int64_t t = time_of(k), t_next = f.reverse ? t - 1 : t + 1;
      if (k % chunk == 0) {  // a pass of input projections, each row block of w_ih read once
        gate_rows(wi, I, pass_inputs(k), std::min(chunk, T_ - k), I * B, g_all, 4 * H * B, b_all);
      }
      const T* h_cur = hbuf[k % 2];
      T* h_next = hbuf[(k + 1) % 2];
      gate_rows(wh, H, h_cur, 1, 0, r_all, 0, nullptr);
      if (units > 0) {
        T* const g = g_all + (k % chunk) * 4 * H * B;
        // Saving, the gate pass overwrites the pre-activations with the
        // gates, which go out in rows as the backward reads them, with the
        // new cell state.
        const ForwardRow<T> w{g, r_all, c, h_next, nullptr, save ? g : nullptr, save ? c : nullptr};
        forward_row(w, u0 * B, u1 * B, H * B);
        const int64_t row = steps.offset(t);
        transpose(h_next + u0 * B, B, units, B, y + row * ldy + u0, ldy);
        if (save) {
          for (int64_t q = 0; q < 4; ++q)
            transpose(g + (q * H + u0) * B, B, units, B, gates + row * 4 * H + q * H + u0, 4 * H);
          transpose(c + u0 * B, B, units, B, cells + row * H + u0, H);
        }
        zero_resets(t_next, c, u0, u1);
        zero_resets(t_next, h_next, u0, u1);
      }
      if ((k + 1) % chunk == 0 && k + 1 < T_) transpose_inputs(k + 1);
      team.barrier();  // the next step reads all of h_next (and the next inputs)
    }
  });
  transpose(hbuf[T_ % 2], B, H, B, f.h.data_ptr<T>(), H);
  transpose(c, B, H, B, f.c.data_ptr<T>(), H);
  return true;
}

template bool forward_unit_major<float>(const LayerForward&);
template bool forward_unit_major<double>(const LayerForward&);

}  // namespace rnnkernels

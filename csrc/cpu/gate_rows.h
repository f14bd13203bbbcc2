// The fused per-step gate work on one row (one sample) of the CPU kernels,
// written once over a "lanes" type so the same code runs on scalars and on
// SIMD vectors (gate_rows_avx2.cpp, gate_rows_avx512.cpp), both through the cell formulas of
// lstm_math.h.
#pragma once

#include <c10/util/BFloat16.h>
#include <stdint.h>

#include <type_traits>

#include "../lstm_math.h"

namespace rnnkernels {

// Forward step of one sample. Every pointer is at this sample's row; the
// gate-major rows (g, r, gates) hold the four gates H apart.
template <typename T>
struct ForwardRow {
  const T* g;                    // input projection + bias at this step (4H)
  const T* r;                    // h_{t-1} @ w_hh^T (4H)
  T* c;                          // cell state, updated in place (H)
  T* h;                          // new h, or o * tanh(c) before a projection (H)
  T* y;                          // output at this step (H), or null
  T* gates;                      // activated gates saved for backward (4H), or null
  T* cells;                      // new cell state saved for backward (H), or null
  c10::BFloat16* y16 = nullptr;  // output rounded to bfloat16 (H), or null
};

// Backward step of one sample.
template <typename T>
struct BackwardRow {
  const T* gates;   // saved activated gates (4H)
  const T* cell;    // saved cell state of this step (H)
  const T* c_prev;  // cell state the step started from (H), null if zero
  const T* dh;      // gradient reaching o * tanh(c) (H)
  T* dc;            // carried cell gradient, in: from step t+1, out: to t-1
  T* dG;            // pre-activation gradients (4H)
  T* r_all;         // o * tanh(c) for the projection's gradient (H), or null
  bool cut;         // no gradient crosses into step t-1
  T* dG_sum;        // this sample's running sum of dG over its steps (4H), or null
};

template <typename T>
struct ScalarLanes {
  using V = T;
  static constexpr int64_t size = 1;
  static V load(const T* p) { return *p; }
  static void store(V v, T* p) { *p = v; }
  static void store_bf16(V v, c10::BFloat16* p) { *p = c10::BFloat16(v); }
};

// Units [j, j1) of one row in steps of Lanes::size; returns where it stopped
// (the tail a wider lane type could not cover). Two loops over the units:
// the cell update (cell_update), then o and h from the new cell state.
template <typename L, typename T>
int64_t forward_span(const ForwardRow<T>& w, int64_t j0, int64_t j1, int64_t H) {
  using V = typename L::V;
  const int64_t end = j0 + (j1 - j0) / L::size * L::size;
  auto pre = [&](int64_t k, int64_t j) {
    return L::load(w.g + k * H + j) + L::load(w.r + k * H + j);
  };
  for (int64_t j = j0; j < end; j += L::size) {
    const CellUpdate<V> u = cell_update<V>(pre(0, j), pre(1, j), pre(2, j), L::load(w.c + j));
    L::store(u.c, w.c + j);
    if (w.gates != nullptr) {
      L::store(u.i, w.gates + j);
      L::store(u.f, w.gates + H + j);
      L::store(u.g, w.gates + 2 * H + j);
      L::store(u.c, w.cells + j);
    }
  }
  for (int64_t j = j0; j < end; j += L::size) {
    const V o = sigmoid_(pre(3, j));
    const V h = o * MathFns<V>::tanh(L::load(w.c + j));
    L::store(h, w.h + j);
    if (w.y != nullptr) L::store(h, w.y + j);
    if constexpr (std::is_same_v<T, float>) {
      if (w.y16 != nullptr) L::store_bf16(h, w.y16 + j);
    }
    if (w.gates != nullptr) L::store(o, w.gates + 3 * H + j);
  }
  return end;
}

// The same for the backward, in two loops likewise: the gradient reaching
// the cell state (cell_gradient), kept in dc, then the other gates'.
template <typename L, typename T>
int64_t backward_span(const BackwardRow<T>& w, int64_t j0, int64_t j1, int64_t H) {
  using V = typename L::V;
  const int64_t end = j0 + (j1 - j0) / L::size * L::size;
  auto add_to_sum = [&](int64_t k, int64_t j, V d) {  // the bias gradient, while d is in registers
    T* s = w.dG_sum + k * H + j;
    L::store(L::load(s) + d, s);
  };
  for (int64_t j = j0; j < end; j += L::size) {
    const V o = L::load(w.gates + 3 * H + j), tc = MathFns<V>::tanh(L::load(w.cell + j));
    const CellGradient<V> d = cell_gradient<V>(o, tc, L::load(w.dh + j), L::load(w.dc + j));
    L::store(d.dc, w.dc + j);
    L::store(d.do_, w.dG + 3 * H + j);
    if (w.dG_sum != nullptr) add_to_sum(3, j, d.do_);
    if (w.r_all != nullptr) L::store(o * tc, w.r_all + j);
  }
  for (int64_t j = j0; j < end; j += L::size) {
    const V c_prev = w.c_prev != nullptr ? L::load(w.c_prev + j) : V(0);
    const CellBackward<V> g = cell_backward_from<V>(L::load(w.gates + j), L::load(w.gates + H + j),
                                                    L::load(w.gates + 2 * H + j), c_prev,
                                                    CellGradient<V>{L::load(w.dc + j), V(0)});
    L::store(g.di, w.dG + j);
    L::store(g.df, w.dG + H + j);
    L::store(g.dg, w.dG + 2 * H + j);
    if (w.dG_sum != nullptr) {
      add_to_sum(0, j, g.di);
      add_to_sum(1, j, g.df);
      add_to_sum(2, j, g.dg);
    }
    L::store(w.cut ? V(0) : g.dc_prev, w.dc + j);
  }
  return end;
}

// The vector spans (gate_rows_avx2.cpp, gate_rows_avx512.cpp): units
// [j0, j) in whole vectors, returning j; only to be called when the ISA's
// rows_*() says the CPU has it.
#define RNNK_DECLARE_ROWS(isa)                                                                \
  bool rows_##isa();                                                                          \
  int64_t forward_row_##isa(const ForwardRow<float>& w, int64_t j0, int64_t j1, int64_t H);   \
  int64_t forward_row_##isa(const ForwardRow<double>& w, int64_t j0, int64_t j1, int64_t H);  \
  int64_t backward_row_##isa(const BackwardRow<float>& w, int64_t j0, int64_t j1, int64_t H); \
  int64_t backward_row_##isa(const BackwardRow<double>& w, int64_t j0, int64_t j1, int64_t H);
RNNK_DECLARE_ROWS(avx2)
RNNK_DECLARE_ROWS(avx512)
#undef RNNK_DECLARE_ROWS

// Units [j0, j1) of one row, on SIMD vectors where the CPU has them
// (gate_rows.cpp, for float and double).
template <typename T>
void forward_row(const ForwardRow<T>& w, int64_t j0, int64_t j1, int64_t H);
template <typename T>
void backward_row(const BackwardRow<T>& w, int64_t j0, int64_t j1, int64_t H);

}  // namespace rnnkernels

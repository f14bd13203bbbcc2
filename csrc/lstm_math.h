// Gate math and time bookkeeping shared by the CPU and CUDA kernels.
//
// Everything here is plain C++ on scalars so that the CPU build (and its
// tests) exercise exactly the formulas the GPU kernels run.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define RNNK_HD __host__ __device__ __forceinline__
#else
#define RNNK_HD inline
#endif

namespace rnnkernels {

RNNK_HD float exp_(float x) { return expf(x); }
RNNK_HD double exp_(double x) { return exp(x); }
RNNK_HD float tanh_(float x) { return tanhf(x); }
RNNK_HD double tanh_(double x) { return tanh(x); }

// Elementary functions by arithmetic type. Scalars use libm; the CPU build
// specialises this for SIMD vectors (csrc/cpu/simd_math.h) so that the cell
// formulas below run on whole vectors without being written twice.
template <typename T>
struct MathFns {
  RNNK_HD static T exp(T x) { return exp_(x); }
  RNNK_HD static T tanh(T x) { return tanh_(x); }
};

template <typename T>
RNNK_HD T sigmoid_(T x) {
  return T(1) / (T(1) + MathFns<T>::exp(-x));
}

// Activated gates and new state of one (sample, hidden unit) pair.
template <typename T>
struct CellForward {
  T i, f, g, o;  // activated input, forget, cell-candidate, output gates
  T c;           // new cell state
  T h;           // o * tanh(c): the new hidden state before any projection
};

// Pre-activations in nn.LSTM's gate order (i, f, g, o) and the previous cell
// state in; activations and the new state out.
template <typename T>
RNNK_HD CellForward<T> cell_forward(T pre_i, T pre_f, T pre_g, T pre_o,
                                    T c_prev) {
  CellForward<T> r;
  r.i = sigmoid_(pre_i);
  r.f = sigmoid_(pre_f);
  r.g = MathFns<T>::tanh(pre_g);
  r.o = sigmoid_(pre_o);
  r.c = r.f * c_prev + r.i * r.g;
  r.h = r.o * MathFns<T>::tanh(r.c);
  return r;
}

// Gradients with respect to the four pre-activations and the previous cell.
template <typename T>
struct CellBackward {
  T di, df, dg, do_;
  T dc_prev;
};

// dh: gradient reaching h = o * tanh(c) at this step (after any projection's
// backward); dc_next: gradient carried into c from the step after this one.
template <typename T>
RNNK_HD CellBackward<T> cell_backward(T i, T f, T g, T o, T c, T c_prev, T dh,
                                      T dc_next) {
  CellBackward<T> r;
  const T tc = MathFns<T>::tanh(c);
  const T dc = dc_next + dh * o * (T(1) - tc * tc);
  r.do_ = dh * tc * o * (T(1) - o);
  r.di = dc * g * i * (T(1) - i);
  r.dg = dc * i * (T(1) - g * g);
  r.df = dc * c_prev * f * (T(1) - f);
  r.dc_prev = dc * f;
  return r;
}

// --- time bookkeeping --------------------------------------------------------
//
// The kernels walk "processing steps" s = 0, 1, ... . A forward direction
// processes original time t = s; a reverse direction walks each sample
// backwards from its own last valid step, t = len - 1 - s.

RNNK_HD int64_t step_time(int64_t s, int64_t len, bool reverse) {
  return reverse ? len - 1 - s : s;
}

// Going from processing step s-1 to s (s >= 1) crosses the boundary between
// original times t and t+1; this returns t+1, the index a window or a reset
// mask names for that boundary.
RNNK_HD int64_t boundary_time(int64_t s, int64_t len, bool reverse) {
  return reverse ? len - s : s;
}

// True when no gradient may flow from processing step s back into s-1:
// the boundary is a multiple of the TBPTT window.
RNNK_HD bool window_cut(int64_t s, int64_t len, bool reverse, int64_t window) {
  return window > 0 && s > 0 && boundary_time(s, len, reverse) % window == 0;
}

// True when the state is zeroed before processing step s. reset_row points at
// the sample's mask value at time 0 with a stride of reset_stride between
// times. At s = 0 only a forward direction has a "before" inside the sequence.
RNNK_HD bool reset_before(int64_t s, int64_t len, bool reverse,
                          const bool* reset_row, int64_t reset_stride) {
  if (reset_row == nullptr) return false;
  if (s == 0) return !reverse && reset_row[0];
  return reset_row[boundary_time(s, len, reverse) * reset_stride];
}

}  // namespace rnnkernels

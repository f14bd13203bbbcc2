// Gate math and time bookkeeping shared by the CPU and CUDA kernels.
//
// Everything here is plain C++ on scalars so that the CPU build (and its
// tests) exercise the formulas the GPU kernels run; the CPU's vector code
// runs them with its own exp, tanh and reciprocals (csrc/cpu/gate_rows_isa.h).
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
// specialises this for SIMD vectors (csrc/cpu/gate_rows_isa.h) so that the cell
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

// The gates the cell update takes and the new cell state: the first half
// of cell_forward, which the CPU's vector loops run apart from the second
// (a fifth faster than one loop over both: shorter chains of dependent
// instructions, fewer live registers).
template <typename T>
struct CellUpdate {
  T i, f, g;  // activated input, forget, cell-candidate gates
  T c;        // new cell state
};

template <typename T>
RNNK_HD CellUpdate<T> cell_update(T pre_i, T pre_f, T pre_g, T c_prev) {
  CellUpdate<T> r;
  r.i = sigmoid_(pre_i);
  r.f = sigmoid_(pre_f);
  r.g = MathFns<T>::tanh(pre_g);
  r.c = r.f * c_prev + r.i * r.g;
  return r;
}

// Pre-activations in nn.LSTM's gate order (i, f, g, o) and the previous cell
// state in; activations and the new state out.
template <typename T>
RNNK_HD CellForward<T> cell_forward(T pre_i, T pre_f, T pre_g, T pre_o, T c_prev) {
  const CellUpdate<T> u = cell_update(pre_i, pre_f, pre_g, c_prev);
  CellForward<T> r;
  r.i = u.i;
  r.f = u.f;
  r.g = u.g;
  r.o = sigmoid_(pre_o);
  r.c = u.c;
  r.h = r.o * MathFns<T>::tanh(r.c);
  return r;
}

// Gradients with respect to the four pre-activations and the previous cell.
template <typename T>
struct CellBackward {
  T di, df, dg, do_;
  T dc_prev;
};

// The gradient reaching this step's cell state (dc) and o's pre-activation
// (do_), from tc = tanh(c), dh, the gradient reaching h = o * tc at this
// step (after any projection's backward), and dc_next, carried into c from
// the step after this one: the first half of cell_backward, which the CPU's
// vector loops run apart from the second, as the forward's halves.
template <typename T>
struct CellGradient {
  T dc, do_;
};

template <typename T>
RNNK_HD CellGradient<T> cell_gradient(T o, T tc, T dh, T dc_next) {
  return {dc_next + dh * o * (T(1) - tc * tc), dh * tc * o * (T(1) - o)};
}

// The rest from dc: the other gates' gradients and dc_prev = dc * f.
template <typename T>
RNNK_HD CellBackward<T> cell_backward_from(T i, T f, T g, T c_prev, CellGradient<T> d) {
  CellBackward<T> r;
  r.do_ = d.do_;
  r.di = d.dc * g * i * (T(1) - i);
  r.dg = d.dc * i * (T(1) - g * g);
  r.df = d.dc * c_prev * f * (T(1) - f);
  r.dc_prev = d.dc * f;
  return r;
}

template <typename T>
RNNK_HD CellBackward<T> cell_backward(T i, T f, T g, T o, T c, T c_prev, T dh, T dc_next) {
  return cell_backward_from(i, f, g, c_prev, cell_gradient(o, MathFns<T>::tanh(c), dh, dc_next));
}

// --- time bookkeeping --------------------------------------------------------
//
// The kernels walk time over packed rows: the samples are sorted by length,
// so the ones running at time t are 0 .. batch[t]-1. A forward direction
// processes t = 0, 1, ..., T-1; a reverse direction t = T-1, ..., 0, so each
// sample starts at its own last step and every sample ends at t = 0.

// Where step t of a direction meets the step processed before it, for one
// sample: whether the sample ran that step (t is not its first), and the
// index a window or a reset mask names the boundary by (the later time).
struct StepEdge {
  bool continued;
  int64_t boundary;
};

// batch_next is the batch size of time t + 1 (0 past the end); only a reverse
// direction reads it, since a sample running t ran t - 1 going forward.
RNNK_HD StepEdge step_edge(int64_t t, int64_t b, bool reverse, int64_t batch_next) {
  return reverse ? StepEdge{b < batch_next, t + 1} : StepEdge{t > 0, t};
}

// The step processed just before t in this direction.
RNNK_HD int64_t previous_time(int64_t t, bool reverse) { return reverse ? t + 1 : t - 1; }

// Whether sample b's state is zeroed before this step; reset is (T, B) or
// null. A forward direction can zero h0 itself (boundary 0); a reverse
// direction's first step has nothing before it inside the sequence.
RNNK_HD bool reset_before(StepEdge e, bool reverse, const bool* reset, int64_t B, int64_t b) {
  return reset != nullptr && (e.continued || !reverse) && reset[e.boundary * B + b];
}

// Whether no gradient may flow from this step into the one before it: the
// boundary is a multiple of the TBPTT window, or the state was reset there.
RNNK_HD bool cut_before(StepEdge e, bool reverse, int64_t window, const bool* reset, int64_t B,
                        int64_t b) {
  return (window > 0 && e.continued && e.boundary % window == 0) ||
         reset_before(e, reverse, reset, B, b);
}

}  // namespace rnnkernels

// The gate rows on one instruction set's vectors, shared by
// gate_rows_avx2.cpp and gate_rows_avx512.cpp: each sets its target pragma
// and CPU_CAPABILITY, includes ATen's vectors, names its ISA (RNNK_ISA), its
// run-time check (RNNK_ISA_AVAILABLE) and Sleef's 3.5-ulp double tanh for
// its vectors (RNNK_TANH_D), then includes this. Everything here is
// instantiated on that ISA's vectors only.
#include <type_traits>

#include "gate_rows.h"

#define RNNK_PASTE(a, b) a##_##b
#define RNNK_NAME(a, b) RNNK_PASTE(a, b)

namespace rnnkernels {

#ifdef RNNKERNELS_SIMD
// Sleef on whole vectors: the 1-ulp exp through ATen's Vectorized, and for
// double the 3.5-ulp tanh, which takes 1.1 ns per float on AVX2 against 2.7
// ns for the 1-ulp one ATen's tanh() calls.
template <typename T>
struct MathFns<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V exp(V x) { return x.exp(); }
  static V tanh(V x);
};
// float tanh from the exp: 1 - 2 / (exp(2x) + 1), exact in both limits, and
// below |x| = 0.55, where that loses digits to cancellation, its Taylor
// series to x^17. Within 3 ulp, at a fraction of the cost of Sleef's 3.5-ulp
// tanh, which was half of a gate pass.
template <>
inline at::vec::Vectorized<float> MathFns<at::vec::Vectorized<float>>::tanh(V x) {
  const V x2 = x * x;
  V p(6404582.f / 10854718875.f);
  for (const float c : {-929569.f / 638512875.f, 21844.f / 6081075.f, -1382.f / 155925.f,
                        62.f / 2835.f, -17.f / 315.f, 2.f / 15.f, -1.f / 3.f})
    p = at::vec::fmadd(p, x2, V(c));
  const V series = at::vec::fmadd(x * x2, p, x);
  const V from_exp = V(1.f) - V(2.f) / ((x + x).exp() + V(1.f));
  return V::blendv(from_exp, series, x.abs() < V(0.55f));
}

template <>
inline at::vec::Vectorized<double> MathFns<at::vec::Vectorized<double>>::tanh(V x) {
  return V(RNNK_TANH_D(x));
}

// Internal to this file: the spans instantiated on it are then this ISA's
// own, never merged by the linker with the same template of another ISA.
namespace {
template <typename T>
struct SimdLanes {
  using V = at::vec::Vectorized<T>;
  static constexpr int64_t size = V::size();
  static V load(const T* p) { return V::loadu(p); }
  static void store(V v, T* p) { v.store(p); }
};
}  // namespace

bool RNNK_NAME(rows, RNNK_ISA)() { return RNNK_ISA_AVAILABLE; }
int64_t RNNK_NAME(forward_row, RNNK_ISA)(const ForwardRow<float>& w, int64_t j0, int64_t j1,
                                         int64_t H) {
  return forward_span<SimdLanes<float>>(w, j0, j1, H);
}
int64_t RNNK_NAME(forward_row, RNNK_ISA)(const ForwardRow<double>& w, int64_t j0, int64_t j1,
                                         int64_t H) {
  return forward_span<SimdLanes<double>>(w, j0, j1, H);
}
int64_t RNNK_NAME(backward_row, RNNK_ISA)(const BackwardRow<float>& w, int64_t j0, int64_t j1,
                                          int64_t H) {
  return backward_span<SimdLanes<float>>(w, j0, j1, H);
}
int64_t RNNK_NAME(backward_row, RNNK_ISA)(const BackwardRow<double>& w, int64_t j0, int64_t j1,
                                          int64_t H) {
  return backward_span<SimdLanes<double>>(w, j0, j1, H);
}

#else

bool RNNK_NAME(rows, RNNK_ISA)() { return false; }
int64_t RNNK_NAME(forward_row, RNNK_ISA)(const ForwardRow<float>&, int64_t j0, int64_t, int64_t) {
  return j0;
}
int64_t RNNK_NAME(forward_row, RNNK_ISA)(const ForwardRow<double>&, int64_t j0, int64_t, int64_t) {
  return j0;
}
int64_t RNNK_NAME(backward_row, RNNK_ISA)(const BackwardRow<float>&, int64_t j0, int64_t, int64_t) {
  return j0;
}
int64_t RNNK_NAME(backward_row, RNNK_ISA)(const BackwardRow<double>&, int64_t j0, int64_t,
                                          int64_t) {
  return j0;
}

#endif

}  // namespace rnnkernels

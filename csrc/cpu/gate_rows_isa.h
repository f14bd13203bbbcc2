// The gate rows on one instruction set's vectors, shared by
// gate_rows_avx2.cpp and gate_rows_avx512.cpp: each sets its target pragma
// and CPU_CAPABILITY, includes ATen's vectors, names its ISA (RNNK_ISA), its
// run-time check (RNNK_ISA_AVAILABLE) and Sleef's 3.5-ulp double tanh for
// its vectors (RNNK_TANH_D), then includes this. Everything here is
// instantiated on that ISA's vectors only (on scalars without the ISA).
#include <type_traits>

#include "gate_rows.h"

#define RNNK_PASTE(a, b) a##_##b
#define RNNK_NAME(a, b) RNNK_PASTE(a, b)

namespace rnnkernels {

#ifdef RNNKERNELS_SIMD
// exp and 1 / d on float vectors. On AVX-512 both are inlined: exp by
// Cody-Waite reduction, a degree-7 Taylor polynomial and vscalefps (about 1
// ulp; overflow to inf and underflow to 0 as expf), 1 / d by vrcp14ps and a
// Newton step (under 1 ulp for finite d); a gate pass makes five of each per
// unit, and Sleef's exp call and vdivps were most of its time. Elsewhere
// Sleef's 1-ulp exp through ATen's Vectorized, and a division.
//
// The compares and blends below are the ISA's own (a mask register on
// AVX-512), not ATen's, whose comparisons build all-ones vectors and whose
// minimum and maximum add a NaN check each: together they were 40% of a
// gate pass's instructions. min_with and max_with return x where x is NaN,
// as the ISA's min and max return their second operand then.
using FloatVec = at::vec::Vectorized<float>;
#ifdef CPU_CAPABILITY_AVX512
using FloatMask = __mmask16;
inline FloatVec min_with(float c, FloatVec x) { return _mm512_min_ps(_mm512_set1_ps(c), x); }
inline FloatVec max_with(float c, FloatVec x) { return _mm512_max_ps(_mm512_set1_ps(c), x); }
inline FloatMask less(FloatVec x, float c) {
  return _mm512_cmp_ps_mask(x, _mm512_set1_ps(c), _CMP_LT_OQ);
}
inline FloatVec select(FloatMask m, FloatVec yes, FloatVec no) {
  return _mm512_mask_blend_ps(m, no, yes);
}
// n and r with v = n ln 2 + r, |r| <= ln 2 / 2 (Cody-Waite: ln 2 in a high
// and a low part), for v in [-104, 89].
struct Ln2Reduced {
  __m512 n, r;
};
inline Ln2Reduced reduce_ln2(__m512 v) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
  return {n, _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), v)};
}
inline FloatVec exp_f(FloatVec v) {
  // The clamps keep NaN and keep infinities out of the reduction.
  const auto [n, x] = reduce_ln2(min_with(89.f, max_with(-104.f, v)));
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  for (const float c : {1.f / 720.f, 1.f / 120.f, 1.f / 24.f, 1.f / 6.f, 0.5f, 1.f, 1.f})
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}
inline FloatVec reciprocal_f(FloatVec v) {
  const __m512 d = v, r = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.f)), r);  // r + r (1 - d r)
}
#else
using FloatMask = __m256;
inline FloatVec min_with(float c, FloatVec x) { return _mm256_min_ps(_mm256_set1_ps(c), x); }
inline FloatVec max_with(float c, FloatVec x) { return _mm256_max_ps(_mm256_set1_ps(c), x); }
inline FloatMask less(FloatVec x, float c) {
  return _mm256_cmp_ps(x, _mm256_set1_ps(c), _CMP_LT_OQ);
}
inline FloatVec select(FloatMask m, FloatVec yes, FloatVec no) {
  return _mm256_blendv_ps(no, yes, m);
}
inline FloatVec exp_f(FloatVec v) { return v.exp(); }
inline FloatVec reciprocal_f(FloatVec v) { return FloatVec(1.f) / v; }
#endif

template <typename T>
struct MathFns<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V exp(V x);
  static V tanh(V x);
};
template <>
inline FloatVec MathFns<FloatVec>::exp(V x) {
  return exp_f(x);
}
template <>
inline at::vec::Vectorized<double> MathFns<at::vec::Vectorized<double>>::exp(V x) {
  return x.exp();
}

// float tanh. On AVX-512: (e^2x - 1) / (e^2x + 1), with e^2x - 1 from
// the exp's reduction (2x = n ln 2 + r): 2^n (e^r - 1) + (2^n - 1), so that
// near 0, where n is 0, it is the polynomial in r and keeps its digits; 2x
// clamped to 20, where tanh is 1 in float. Within 1.5 ulp (eps * |tanh x|),
// a quarter cheaper than the form below, which was 1.9 ulp; the gate pass
// computes two a unit. Elsewhere 1 - 2 / (exp(2|x|) + 1), the sign put back,
// exact in the limit, and below |x| = 0.55, where that loses digits to
// cancellation, its Taylor series to x^17; within 2 ulp.
template <>
inline FloatVec MathFns<FloatVec>::tanh(V x) {
#ifdef CPU_CAPABILITY_AVX512
  const auto [n, v] = reduce_ln2(min_with(20.f, max_with(-20.f, _mm512_add_ps(x, x))));
  __m512 p = _mm512_set1_ps(1.f / 40320.f);
  for (const float c : {1.f / 5040.f, 1.f / 720.f, 1.f / 120.f, 1.f / 24.f, 1.f / 6.f, 0.5f})
    p = _mm512_fmadd_ps(p, v, _mm512_set1_ps(c));
  p = _mm512_fmadd_ps(_mm512_mul_ps(v, v), p, v);  // e^r - 1
  const __m512 s = _mm512_scalef_ps(_mm512_set1_ps(1.f), n);
  const __m512 em = _mm512_fmadd_ps(s, p, _mm512_sub_ps(s, _mm512_set1_ps(1.f)));
  // em / d: a quotient from vrcp14ps, corrected by its residual (fma-exact).
  const __m512 d = _mm512_add_ps(em, _mm512_set1_ps(2.f)), r = _mm512_rcp14_ps(d);
  const __m512 q = _mm512_mul_ps(em, r);
  return V(_mm512_fmadd_ps(_mm512_fnmadd_ps(q, d, em), r, q)) | (x & V(-0.f));  // tanh(-0) = -0
#else
  const V sign(-0.f), a = x.abs(), a2 = a * a;
  V p(6404582.f / 10854718875.f);
  for (const float c : {-929569.f / 638512875.f, 21844.f / 6081075.f, -1382.f / 155925.f,
                        62.f / 2835.f, -17.f / 315.f, 2.f / 15.f, -1.f / 3.f})
    p = at::vec::fmadd(p, a2, V(c));
  const V series = at::vec::fmadd(a * a2, p, a);
  const V from_exp =
      at::vec::fnmadd(V(2.f), reciprocal_f(exp_f(min_with(20.f, a + a)) + V(1.f)), V(1.f));
  return select(less(a, 0.55f), series, from_exp) | (x & sign);
#endif
}

// float sigmoid with the reciprocal above. Below x = -88 (sigmoid under
// 1e-38) the exp is kept finite for the reciprocal and the result is 0, as
// 1 / (1 + inf) is: a zero gate times an infinite state must stay NaN.
template <>
inline FloatVec sigmoid_(FloatVec x) {
  const FloatVec s = reciprocal_f(FloatVec(1.f) + exp_f(min_with(88.f, x.neg())));
  return select(less(x, -88.f), FloatVec(0.f), s);
}

// double tanh: Sleef's 3.5-ulp one, 1.1 ns per float on AVX2 against 2.7 ns
// for the 1-ulp one ATen's tanh() calls.
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
  // Rounded as ATen's casts round (nearest even), so the bits are a cast's.
  static void store_bf16(V v, c10::BFloat16* p) {
    at::vec::convert_float_bfloat16(v, v).store(p, size);
  }
};
}  // namespace

bool RNNK_NAME(rows, RNNK_ISA)() { return RNNK_ISA_AVAILABLE; }

#else

// Without the ISA (not GCC on x86-64) rows_*() is false and the spans below
// are never called; they compile on scalars.
template <typename T>
using SimdLanes = ScalarLanes<T>;
bool RNNK_NAME(rows, RNNK_ISA)() { return false; }

#endif

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

}  // namespace rnnkernels

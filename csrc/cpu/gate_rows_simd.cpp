// The gate rows on AVX2 vectors. This file alone is compiled for AVX2 + FMA
// (the pragma below, as ATen compiles its own per-capability kernels); the
// entry points check the CPU at run time and use scalars without AVX2.
//
// c10's headers come before the pragma, so that no inline function of theirs
// gets an out-of-line AVX2 copy the linker might keep for every caller;
// ATen's vector classes, included after it, live in a per-capability
// namespace, and everything this file instantiates is on those vectors (the
// scalar rows are gate_rows.cpp's).
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <c10/util/irange.h>

#include <cmath>
#include <type_traits>

#include "cpu_features.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
// What -mavx2 -mfma would define; sleef.h and ATen key their AVX2 code on it.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNKERNELS_SIMD 1
// ATen's headers return vectors from functions declared before the pragma
// could matter; the ABI note does not concern this file's callers.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <ATen/cpu/vec/vec.h>

#include "gate_rows.h"

namespace rnnkernels {

#ifdef RNNKERNELS_SIMD
// Sleef on whole vectors: the 1-ulp exp through ATen's Vectorized, and the
// 3.5-ulp tanh, which takes 1.1 ns per float here against 2.7 ns for the
// 1-ulp one ATen's tanh() calls; tanh is most of a gate pass's time.
template <typename T>
struct MathFns<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V exp(V x) { return x.exp(); }
  static V tanh(V x);
};
template <>
inline at::vec::Vectorized<float> MathFns<at::vec::Vectorized<float>>::tanh(V x) {
  return V(Sleef_finz_tanhf8_u35avx2(x));
}
template <>
inline at::vec::Vectorized<double> MathFns<at::vec::Vectorized<double>>::tanh(V x) {
  return V(Sleef_finz_tanhd4_u35avx2(x));
}

template <typename T>
struct SimdLanes {
  using V = at::vec::Vectorized<T>;
  static constexpr int64_t size = V::size();
  static V load(const T* p) { return V::loadu(p); }
  static void store(V v, T* p) { v.store(p); }
};

template <typename Row>
int64_t forward_simd(const Row& w, int64_t j0, int64_t j1, int64_t H) {
  using T = std::remove_const_t<std::remove_pointer_t<decltype(w.c)>>;
  return forward_span<SimdLanes<T>>(w, j0, j1, H);
}
template <typename Row>
int64_t backward_simd(const Row& w, int64_t j0, int64_t j1, int64_t H) {
  using T = std::remove_const_t<std::remove_pointer_t<decltype(w.dc)>>;
  return backward_span<SimdLanes<T>>(w, j0, j1, H);
}

bool simd_rows_available() { return cpu_has_avx2_fma(); }
int64_t forward_row_simd(const ForwardRow<float>& w, int64_t j0, int64_t j1, int64_t H) {
  return forward_simd(w, j0, j1, H);
}
int64_t forward_row_simd(const ForwardRow<double>& w, int64_t j0, int64_t j1, int64_t H) {
  return forward_simd(w, j0, j1, H);
}
int64_t backward_row_simd(const BackwardRow<float>& w, int64_t j0, int64_t j1, int64_t H) {
  return backward_simd(w, j0, j1, H);
}
int64_t backward_row_simd(const BackwardRow<double>& w, int64_t j0, int64_t j1, int64_t H) {
  return backward_simd(w, j0, j1, H);
}

#else

bool simd_rows_available() { return false; }
int64_t forward_row_simd(const ForwardRow<float>&, int64_t j0, int64_t, int64_t) { return j0; }
int64_t forward_row_simd(const ForwardRow<double>&, int64_t j0, int64_t, int64_t) { return j0; }
int64_t backward_row_simd(const BackwardRow<float>&, int64_t j0, int64_t, int64_t) { return j0; }
int64_t backward_row_simd(const BackwardRow<double>&, int64_t j0, int64_t, int64_t) { return j0; }

#endif

}  // namespace rnnkernels

// AVX-512 tiles of the CPU GEMM, over the same 16-float (8-double) panels as
// the AVX2 ones: a panel row is one register, and the 32 registers hold up to
// 24 accumulators. This file alone is compiled for AVX-512F (the pragma
// below); the lookups check the CPU at run time and return null without it.
//
// Headers with inline functions come before the pragma (see
// gemm_tiles_avx2.cpp).
#include "cpu_features.h"
#include "gemm_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f")
#define RNNKERNELS_AVX512_TILES 1
#include <immintrin.h>
#endif

namespace rnnkernels {

#ifdef RNNKERNELS_AVX512_TILES
namespace {

template <typename T>
struct Vec;

// The mask of the first n lanes.
inline __mmask16 first16(int n) { return static_cast<__mmask16>((1u << n) - 1); }

template <>
struct Vec<float> {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  using B = V;
  static B load_b(const float* p) { return load(p); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first16(n), p); }
  static void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, first16(n), v); }
};

template <>
struct Vec<double> {
  using V = __m512d;
  static constexpr int W = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  using B = V;
  static B load_b(const double* p) { return load(p); }
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V load_n(const double* p, int n) {
    return _mm512_maskz_loadu_pd(static_cast<__mmask8>(first16(n)), p);
  }
  static void store_n(double* p, V v, int n) {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>(first16(n)), v);
  }
};

#include "gemm_tiles_isa.h"

// Every row count with every panel count a table can ask for
// (avx512_panels_per_tile, and fewer for a thread's narrow share).
template <typename T>
TileFn<T> lookup(int rows, int np) {
  return cpu_has_avx512f() ? tile_for<T, 1, 2, 3, 4, 6, 8>(rows, np) : nullptr;
}

}  // namespace

TileFn<float> avx512_tile_f32(int rows, int np) { return lookup<float>(rows, np); }
TileFn<double> avx512_tile_f64(int rows, int np) { return lookup<double>(rows, np); }

#else

TileFn<float> avx512_tile_f32(int, int) { return nullptr; }
TileFn<double> avx512_tile_f64(int, int) { return nullptr; }

#endif

}  // namespace rnnkernels

// AVX2 + FMA tiles of the CPU GEMM. This file alone is compiled for AVX2 +
// FMA (the pragma below, as gate_rows_avx2.cpp); the lookups check the CPU at
// run time and return null without it.
//
// Headers with inline functions come before the pragma: an out-of-line copy
// compiled for AVX2 could otherwise be the one the linker keeps for callers
// on CPUs without it.
#include "cpu_features.h"
#include "gemm_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
#define RNNKERNELS_AVX2_TILES 1
#include <immintrin.h>
#endif

namespace rnnkernels {

#ifdef RNNKERNELS_AVX2_TILES
namespace {

template <typename T>
struct Vec;

template <>
struct Vec<float> {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  using B = V;
  static B load_b(const float* p) { return load(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load_n(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, first(n), v); }
};

template <>
struct Vec<double> {
  using V = __m256d;
  static constexpr int W = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  using B = V;
  static B load_b(const double* p) { return load(p); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static __m256i first(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V load_n(const double* p, int n) { return _mm256_maskload_pd(p, first(n)); }
  static void store_n(double* p, V v, int n) { _mm256_maskstore_pd(p, first(n), v); }
};

#include "gemm_tiles_isa.h"

// One panel with any row count, or panels_per_tile(rows) panels for the short
// tiles: about twelve accumulators of 8 floats.
template <typename T>
TileFn<T> lookup(int rows, int np) {
  if (!cpu_has_avx2_fma() || (np != 1 && np != panels_per_tile(rows))) return nullptr;
  return tile_for<T, 1, 2, 3, 4>(rows, np);
}

}  // namespace

TileFn<float> avx2_tile_f32(int rows, int np) { return lookup<float>(rows, np); }
TileFn<double> avx2_tile_f64(int rows, int np) { return lookup<double>(rows, np); }

#else

TileFn<float> avx2_tile_f32(int, int) { return nullptr; }
TileFn<double> avx2_tile_f64(int, int) { return nullptr; }

#endif

}  // namespace rnnkernels

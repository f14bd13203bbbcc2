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
struct Avx2;

template <>
struct Avx2<float> {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};

template <>
struct Avx2<double> {
  using V = __m256d;
  static constexpr int W = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
};

// The accumulators stay in registers only when every loop over them is
// unrolled, hence the pragmas on the constant-trip loops.
template <typename T, int MR, int NP>
void tile(const Tile<T>& t) {
  using A = Avx2<T>;
  using V = typename A::V;
  constexpr int W = A::W, NV = 2 * NP;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)  // the np panels are adjacent columns of c
      acc[m][v] = t.accumulate ? A::load(t.c + m * t.ldc + v * W) : A::zero();
  }
  const T* b = t.b;
  const T* a = t.a;
  for (int64_t k = 0; k < t.K; ++k, b += 2 * W, a += t.a_step) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = A::load(b + (v / 2) * t.panel_stride + (v % 2) * W);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const V av = A::broadcast(a + m * t.lda);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = A::fma(av, bv[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) A::store(t.c + m * t.ldc + v * W, acc[m][v]);
  }
}

template <typename T>
TileFn<T> lookup(int rows, int np) {
  if (!cpu_has_avx2_fma()) return nullptr;
  if (np == 1) {
    switch (rows) {
      case 1:
        return tile<T, 1, 1>;
      case 2:
        return tile<T, 2, 1>;
      case 3:
        return tile<T, 3, 1>;
      case 4:
        return tile<T, 4, 1>;
      case 5:
        return tile<T, 5, 1>;
      case 6:
        return tile<T, 6, 1>;
      default:
        return nullptr;
    }
  }
  if (np == panels_per_tile(rows)) {
    switch (rows) {
      case 1:
        return tile<T, 1, panels_per_tile(1)>;
      case 2:
        return tile<T, 2, panels_per_tile(2)>;
      case 3:
        return tile<T, 3, panels_per_tile(3)>;
      default:
        return nullptr;
    }
  }
  return nullptr;
}

}  // namespace

TileFn<float> avx2_tile_f32(int rows, int np) { return lookup<float>(rows, np); }
TileFn<double> avx2_tile_f64(int rows, int np) { return lookup<double>(rows, np); }

#else

TileFn<float> avx2_tile_f32(int, int) { return nullptr; }
TileFn<double> avx2_tile_f64(int, int) { return nullptr; }

#endif

}  // namespace rnnkernels

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
struct Avx512;

template <>
struct Avx512<float> {
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};

template <>
struct Avx512<double> {
  using V = __m512d;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
};

// The accumulators stay in registers only when every loop over them is
// unrolled, hence the pragmas on the constant-trip loops.
template <typename T, int MR, int NP>
void tile(const Tile<T>& t) {
  using A = Avx512<T>;
  using V = typename A::V;
  constexpr int64_t NR = kPanelWidth<T>;
  V acc[MR][NP];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NP; ++v)  // the np panels are adjacent columns of c
      acc[m][v] = t.accumulate ? A::load(t.c + m * t.ldc + v * NR) : A::zero();
  }
  const T* b = t.b;
  const T* a = t.a;
  for (int64_t k = 0; k < t.K; ++k, b += NR, a += t.a_step) {
    V bv[NP];
#pragma GCC unroll 8
    for (int v = 0; v < NP; ++v) bv[v] = A::load(b + v * t.panel_stride);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const V av = A::broadcast(a + m * t.lda);
#pragma GCC unroll 8
      for (int v = 0; v < NP; ++v) acc[m][v] = A::fma(av, bv[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NP; ++v) A::store(t.c + m * t.ldc + v * NR, acc[m][v]);
  }
}

template <typename T, int NP>
TileFn<T> by_rows(int rows) {
  switch (rows) {
    case 1:
      return tile<T, 1, NP>;
    case 2:
      return tile<T, 2, NP>;
    case 3:
      return tile<T, 3, NP>;
    case 4:
      return tile<T, 4, NP>;
    case 5:
      return tile<T, 5, NP>;
    case 6:
      return tile<T, 6, NP>;
    default:
      return nullptr;
  }
}

// Every row count with every panel count a table can ask for: the row
// blocks of one product share the panel count of the tallest.
template <typename T>
TileFn<T> lookup(int rows, int np) {
  if (!cpu_has_avx512f() || rows < 1 || rows > kMaxTileRows) return nullptr;
  switch (np) {
    case 1:
      return by_rows<T, 1>(rows);
    case 4:
      return by_rows<T, 4>(rows);
    case 6:
      return by_rows<T, 6>(rows);
    case 8:
      return by_rows<T, 8>(rows);
    default:
      return nullptr;
  }
}

}  // namespace

TileFn<float> avx512_tile_f32(int rows, int np) { return lookup<float>(rows, np); }
TileFn<double> avx512_tile_f64(int rows, int np) { return lookup<double>(rows, np); }

#else

TileFn<float> avx512_tile_f32(int, int) { return nullptr; }
TileFn<double> avx512_tile_f64(int, int) { return nullptr; }

#endif

}  // namespace rnnkernels

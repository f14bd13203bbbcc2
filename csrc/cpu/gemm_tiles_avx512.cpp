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
  return cpu_has_avx512f() ? wide_tile_for<T>(rows, np) : nullptr;
}

// The 16 x 16 transpose of 32-bit lanes: pairs of rows interleaved, then
// pairs of those, then 128-bit quarters swapped twice (64 shuffles where an
// element-by-element copy makes 256 loads and 256 stores). Inlined: as a
// call it passed its 16 registers through the stack, and packing a weight
// took 10-12% longer (an inference call at T1 B8 H256-H512 on a Zen 4).
__attribute__((always_inline)) inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  // u[4k + m], quarter q: column 4q + m of rows 4k .. 4k + 3.
  __m512 u[16];
  for (int k = 0; k < 4; ++k) {
    u[4 * k] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
    u[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
    u[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
    u[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);  // columns m, 8 + m
    const __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);  // columns 4 + m, 12 + m
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
    r[m] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    r[4 + m] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
  }
}

}  // namespace

TileFn<float> avx512_tile_f32(int rows, int np) { return lookup<float>(rows, np); }
TileFn<double> avx512_tile_f64(int rows, int np) { return lookup<double>(rows, np); }

void transpose_block(const float* a, int64_t lda, float* out, int64_t ldo) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(a + i * lda);
  transpose16(r);
  for (int j = 0; j < 16; ++j) _mm512_storeu_ps(out + j * ldo, r[j]);
}

// bfloat16 through the same lanes, each widened to 32 bits and back.
void transpose_block(const c10::BFloat16* a, int64_t lda, c10::BFloat16* out, int64_t ldo) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) {
    const __m256i row = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * lda));
    r[i] = _mm512_castsi512_ps(_mm512_cvtepu16_epi32(row));
  }
  transpose16(r);
  for (int j = 0; j < 16; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * ldo),
                        _mm512_cvtepi32_epi16(_mm512_castps_si512(r[j])));
}

#else

TileFn<float> avx512_tile_f32(int, int) { return nullptr; }
TileFn<double> avx512_tile_f64(int, int) { return nullptr; }
void transpose_block(const float*, int64_t, float*, int64_t) {}
void transpose_block(const c10::BFloat16*, int64_t, c10::BFloat16*, int64_t) {}

#endif

}  // namespace rnnkernels

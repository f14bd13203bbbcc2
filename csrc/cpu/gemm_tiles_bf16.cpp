// bfloat16 tiles of the CPU GEMM: vdpbf16ps sums a pair of depths into each
// float lane, twice the float FMA rate on CPUs with avx512_bf16. This file
// alone is compiled for it (the pragma below); the lookups check the CPU at
// run time and return null without it.
//
// Headers with inline functions come before the pragma (see
// gemm_tiles_avx2.cpp).
#include <cstring>

#include "cpu_features.h"
#include "gemm_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
#define RNNKERNELS_BF16_TILES 1
#include <immintrin.h>
#endif

namespace rnnkernels {

#ifdef RNNKERNELS_BF16_TILES
namespace {

template <typename T>
struct Vec;

// A panel row is 16 columns times a pair of depths; a's pair is broadcast
// as one 32-bit lane.
template <>
struct Vec<c10::BFloat16> {
  using V = __m512;
  using B = __m512bh;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static B load_b(const c10::BFloat16* p) { return (B)_mm512_loadu_si512(p); }
  static B broadcast(const c10::BFloat16* p) {
    int32_t pair;
    std::memcpy(&pair, p, sizeof(pair));
    return (B)_mm512_set1_epi32(pair);
  }
  static V fma(B a, B b, V c) { return _mm512_dpbf16_ps(c, a, b); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_n(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static void store_n(float* p, V v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
};

#include "gemm_tiles_isa.h"

bool cpu_has_bf16_tiles() {
  static const bool ok = cpu_has_avx512_rows() && __builtin_cpu_supports("avx512bf16");
  return ok;
}

}  // namespace

// The same panel counts as the float AVX-512 tiles.
TileFn<c10::BFloat16> avx512_tile_bf16(int rows, int np) {
  return cpu_has_bf16_tiles() ? wide_tile_for<c10::BFloat16>(rows, np) : nullptr;
}

void rows_to_bf16(const float* a, int64_t M, int64_t K, int64_t lda, c10::BFloat16* out,
                  int64_t ldo) {
  for (int64_t m = 0; m < M; ++m) {
    const float* src = a + m * lda;
    c10::BFloat16* dst = out + m * ldo;
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 part = static_cast<__mmask16>(K - k >= 16 ? 0xffff : (1u << (K - k)) - 1);
      const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(part, src + k));
      _mm256_mask_storeu_epi16(dst + k, part, (__m256i)v);
    }
    // Memset, not a template: an instance compiled here could be the one
    // the linker keeps for every file.
    std::memset(static_cast<void*>(dst + K), 0, (ldo - K) * sizeof(c10::BFloat16));
  }
}

void pairs_to_bf16(const float* even, const float* odd, int64_t n, c10::BFloat16* out) {
  // Lane j of the two rounded halves becomes elements 2j and 2j + 1.
  alignas(64) static constexpr uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i order = _mm512_load_si512(kInterleave);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 part = static_cast<__mmask16>(n - j >= 16 ? 0xffff : (1u << (n - j)) - 1);
    const __m512 e = _mm512_maskz_loadu_ps(part, even + j);
    const __m512 o = odd != nullptr ? _mm512_maskz_loadu_ps(part, odd + j) : _mm512_setzero_ps();
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(o, e);  // e in the low half
    const __mmask32 pairs =
        static_cast<__mmask32>(n - j >= 16 ? 0xffffffffu : (uint32_t{1} << (2 * (n - j))) - 1);
    _mm512_mask_storeu_epi16(out + 2 * j, pairs, _mm512_permutexvar_epi16(order, both));
  }
}

#else

TileFn<c10::BFloat16> avx512_tile_bf16(int, int) { return nullptr; }
void rows_to_bf16(const float*, int64_t, int64_t, int64_t, c10::BFloat16*, int64_t) {}
void pairs_to_bf16(const float*, const float*, int64_t, c10::BFloat16*) {}

#endif

}  // namespace rnnkernels

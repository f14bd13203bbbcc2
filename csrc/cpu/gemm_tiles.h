// The innermost piece of the CPU GEMM (panel_gemm.cpp): one tile of C from
// rows of A and column panels of a packed B. The tiles live in
// gemm_tiles_avx2.cpp, gemm_tiles_avx512.cpp and gemm_tiles_bf16.cpp, each
// compiled for its instruction set.
#pragma once

#include <c10/util/BFloat16.h>
#include <stdint.h>

#include <type_traits>

namespace rnnkernels {

// What a product of T operands accumulates into: bfloat16 products sum in
// float, as oneDNN's do.
template <typename T>
struct Accumulator {
  using type = T;
};
template <>
struct Accumulator<c10::BFloat16> {
  using type = float;
};
template <typename T>
using acc_t = typename Accumulator<T>::type;

// Depths one multiply-add consumes: vdpbf16ps sums pairs, so bfloat16 panels
// interleave pairs of depths (and a row of A is padded to an even depth).
template <typename T>
constexpr int64_t kDepthGroup = std::is_same_v<T, c10::BFloat16> ? 2 : 1;

// K rounded up to a whole depth group: the depth of a packed panel, and of a
// row of bfloat16 A.
template <typename T>
constexpr int64_t padded_depth(int64_t K) {
  return (K + kDepthGroup<T> - 1) / kDepthGroup<T> * kDepthGroup<T>;
}

// Columns per packed panel: two AVX2 vectors of the accumulator, so a tile
// row of one panel is two accumulators. Element (k, j) of a panel sits at
// (k / G) * G * width + j * G + k % G for G = kDepthGroup<T>.
template <typename T>
constexpr int64_t kPanelWidth = 2 * 32 / static_cast<int64_t>(sizeof(acc_t<T>));

// Largest number of rows of A one tile covers: 8 for the AVX-512 tiles, 6 for
// the AVX2 ones (kMaxAvx2TileRows), whose 16 registers hold fewer
// accumulators.
constexpr int kMaxTileRows = 8, kMaxAvx2TileRows = 6;

// c[m][n] = start + sum_k a[m * lda + k] * panel(k, n) for m < rows and n in
// the np panels starting at b, panel p at b + p * panel_stride, k-major with
// kPanelWidth<T> columns per k (ldb apart, by default the panel's width), n <
// cols (the rest of a partly filled last panel is neither read from c or init
// nor written). start is c itself when accumulate, else init[n] (a bias row)
// when init is set, else row_init[m] (a bias column; not for bfloat16) when
// that is set, else zero. For bfloat16, K is a multiple of 2.
template <typename T>
struct Tile {
  int64_t K;
  const T* a;
  int64_t lda;
  const T* b;
  int64_t panel_stride;
  acc_t<T>* c;
  int64_t ldc;
  bool accumulate;
  const acc_t<T>* init = nullptr;
  int64_t cols = INT64_MAX;
  // Cache lines [prefetch, + 64 * prefetch_lines) to bring into L2 while the
  // tile runs, spread over its depths: a share of the panels the next tiles
  // read.
  const char* prefetch = nullptr;
  int64_t prefetch_lines = 0;
  int64_t ldb = kPanelWidth<T> * kDepthGroup<T>;
  const acc_t<T>* row_init = nullptr;
};

template <typename T>
using TileFn = void (*)(const Tile<T>&);

// The AVX2 tile for `rows` rows (1..kMaxAvx2TileRows) and np panels, or null when
// the CPU lacks AVX2 + FMA, the build is not for x86-64, or no tile of that
// shape exists.
TileFn<float> avx2_tile_f32(int rows, int np);
TileFn<double> avx2_tile_f64(int rows, int np);

// Panels per tile for a row count: together about twelve accumulators, enough
// in flight to cover the FMA latency without running out of registers.
constexpr int panels_per_tile(int rows) {
  return rows >= 4 ? 1 : rows == 3 ? 2 : rows == 2 ? 3 : 4;
}

// The AVX-512 tiles (gemm_tiles_avx512.cpp), over the same panels, or null
// without AVX-512F (avx512_bf16 for the bfloat16 tiles); a panel row is one
// register there, so a tile has up to 24 accumulators. Eight rows of three
// panels, not two blocks of four rows of four, multiply eight rows (a step
// at batch 8) reading each panel once: (8, 512) x (512, 2048) on a Zen 5,
// 335-372 -> 415-448 GFLOP/s, and inference at T35-T500 B8 H512 10-12%
// faster.
TileFn<float> avx512_tile_f32(int rows, int np);
TileFn<double> avx512_tile_f64(int rows, int np);
TileFn<c10::BFloat16> avx512_tile_bf16(int rows, int np);
constexpr int avx512_panels_per_tile(int rows) {
  return rows <= 1 ? 8 : rows <= 3 ? 6 : rows <= 6 ? 4 : 3;
}

// out[j * ldo + i] = a[i * lda + j] for i, j < 16: a block of a transpose
// in AVX-512 registers. Only where avx512_tile_f32 is not null.
void transpose_block(const float* a, int64_t lda, float* out, int64_t ldo);
void transpose_block(const c10::BFloat16* a, int64_t lda, c10::BFloat16* out, int64_t ldo);

// Rows [0, M) of a (K columns, stride lda) rounded to bfloat16 into out
// (stride ldo >= K rounded up to even, the pad zeroed). Only where
// avx512_tile_bf16 is not null.
void rows_to_bf16(const float* a, int64_t M, int64_t K, int64_t lda, c10::BFloat16* out,
                  int64_t ldo);

// out[2j] = even[j] and out[2j + 1] = odd[j] (zero where odd is null) for
// j < n, rounded to bfloat16: two depths of a row of a bfloat16 panel. Only
// where avx512_tile_bf16 is not null.
void pairs_to_bf16(const float* even, const float* odd, int64_t n, c10::BFloat16* out);

}  // namespace rnnkernels

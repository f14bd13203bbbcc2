// The innermost piece of the CPU GEMM (panel_gemm.cpp): one tile of C from
// rows of A and column panels of a packed B. The AVX2 tiles live in
// gemm_tiles_avx2.cpp, the only file compiled for AVX2 + FMA.
#pragma once

#include <stdint.h>

namespace rnnkernels {

// Columns per packed panel: two AVX2 vectors, so a tile row of one panel is
// two accumulators.
template <typename T>
constexpr int64_t kPanelWidth = 2 * 32 / static_cast<int64_t>(sizeof(T));

// Largest number of rows of A one tile covers.
constexpr int kMaxTileRows = 6;

// c[m][n] = init + sum_k a[m * lda + k * a_step] * panel(k, n) for m < rows
// and n in the np panels starting at b, panel p at b + p * panel_stride,
// k-major with kPanelWidth<T> columns per k. init is c itself when
// accumulate, else zero. a_step is 1 for rows of a, lda's partner for a
// transposed a.
template <typename T>
struct Tile {
  int64_t K;
  const T* a;
  int64_t lda;
  const T* b;
  int64_t panel_stride;
  T* c;
  int64_t ldc;
  bool accumulate;
  int64_t a_step = 1;
};

template <typename T>
using TileFn = void (*)(const Tile<T>&);

// The AVX2 tile for `rows` rows (1..kMaxTileRows) and np panels, or null when
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
// without AVX-512F; a panel row is one register there, so a tile has up to
// 24 accumulators.
TileFn<float> avx512_tile_f32(int rows, int np);
TileFn<double> avx512_tile_f64(int rows, int np);
constexpr int avx512_panels_per_tile(int rows) { return rows <= 1 ? 8 : rows <= 3 ? 6 : 4; }

}  // namespace rnnkernels

// The register tile of the CPU GEMM on one instruction set's vectors, shared
// by gemm_tiles_avx2.cpp and gemm_tiles_avx512.cpp: each sets its target
// pragma, defines Vec<T> for its types (accumulator V of W lanes with zero,
// load and store; B, the vector of a panel row, with load_b; broadcast of
// a's depth group; fma) in an unnamed namespace, then includes this inside
// that namespace. A panel row (kPanelWidth<T> columns) is kPanelWidth / W
// vectors.

// The accumulators stay in registers only when every loop over them is
// unrolled, hence the pragmas on the constant-trip loops.
template <typename T, int MR, int NP>
void tile(const Tile<T>& t) {
  using A = Vec<T>;
  using V = typename A::V;
  constexpr int W = A::W, PV = kPanelWidth<T> / W, NV = PV * NP;
  constexpr int64_t G = kDepthGroup<T>;
  V acc[MR][NV];
  // Only a tile over a partly filled last panel masks its loads and stores:
  // one test a tile, not one a vector.
  const bool whole = t.cols >= NV * W;
  auto valid = [&](int v) {
    return static_cast<int>(std::min<int64_t>(W, std::max<int64_t>(0, t.cols - v * W)));
  };
  auto load = [&](const acc_t<T>* p, int v) {
    const int n = valid(v);
    return n == W ? A::load(p) : n > 0 ? A::load_n(p, n) : A::zero();
  };
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {  // the np panels are adjacent columns of c
      const acc_t<T>* start = t.accumulate ? t.c + m * t.ldc : t.init;
      if constexpr (std::is_same_v<T, acc_t<T>>) {
        if (start == nullptr && t.row_init != nullptr) {
          acc[m][v] = A::broadcast(t.row_init + m);
          continue;
        }
      }
      acc[m][v] = start == nullptr ? A::zero()
                  : whole          ? A::load(start + v * W)
                                   : load(start + v * W, v);
    }
  }
  const T* b = t.b;
  const T* a = t.a;
  const char* pf = t.prefetch;
  const char* const pf_end = pf + 64 * t.prefetch_lines;
  const int64_t pf_per = (t.prefetch_lines * G + t.K - 1) / std::max<int64_t>(1, t.K);
  for (int64_t k = 0; k < t.K; k += G, b += t.ldb, a += G) {
    for (int64_t i = 0; i < pf_per && pf < pf_end; ++i, pf += 64) __builtin_prefetch(pf, 0, 2);
    typename A::B bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = A::load_b(b + (v / PV) * t.panel_stride + (v % PV) * W * G);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const auto av = A::broadcast(a + m * t.lda);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = A::fma(av, bv[v], acc[m][v]);
    }
  }
  if (whole) {
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) A::store(t.c + m * t.ldc + v * W, acc[m][v]);
    }
    return;
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int n = valid(v);
      if (n == W) {
        A::store(t.c + m * t.ldc + v * W, acc[m][v]);
      } else if (n > 0) {
        A::store_n(t.c + m * t.ldc + v * W, acc[m][v], n);
      }
    }
  }
}

// The tile of `rows` rows and NP panels, for rows among the row counts Rows;
// null for any other.
template <typename T, int NP, int... Rows>
TileFn<T> tile_of(int rows) {
  TileFn<T> f = nullptr;
  ((rows == Rows ? f = tile<T, Rows, NP> : f), ...);
  return f;
}

// The tile of `rows` rows (1..6) and np panels, for np among the panel
// counts NPs this instruction set's tiles come in; null for any other.
template <typename T, int... NPs>
TileFn<T> tile_for(int rows, int np) {
  TileFn<T> f = nullptr;
  ((np == NPs ? f = tile_of<T, NPs, 1, 2, 3, 4, 5, 6>(rows) : f), ...);
  return f;
}

// With 32 registers, also 7 and 8 rows of up to 3 panels (24 accumulators).
template <typename T>
TileFn<T> wide_tile_for(int rows, int np) {
  static_assert(kMaxTileRows == 8, "a tile for each row count");
  if (rows <= 6) return tile_for<T, 1, 2, 3, 4, 6, 8>(rows, np);
  return np == 1   ? tile_of<T, 1, 7, 8>(rows)
         : np == 2 ? tile_of<T, 2, 7, 8>(rows)
         : np == 3 ? tile_of<T, 3, 7, 8>(rows)
                   : nullptr;
}

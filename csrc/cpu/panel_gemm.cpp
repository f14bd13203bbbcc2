#include "panel_gemm.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_features.h"
#include "gemm_tiles.h"
#include "workspace.h"

namespace rnnkernels {
namespace {

// Depth of one pass over the panels. A panel's slice (up to 128 KiB) and the
// rows of a (a few, at step shapes) then stay in L2 while the tiles walk the
// slice once per row block; the panels themselves stream from L3 in long
// contiguous runs, which the prefetcher follows. Shallower blocks that fit
// L1 measured slower at the per-step shapes (bench.probe gemm).
constexpr int64_t kDepthBlock = 2048;

// Bytes of A's rows one pass over a thread's panels reads. Every group of
// panels reads all of the pass's rows, so a tall A (the closing GEMMs over
// all steps) goes in chunks that stay in L3 for all the groups, instead of
// coming from memory once per group: a quarter of a 32 MiB L3. On a Zen 5,
// dx at T100 B32 H512, (3200, 2048) x (2048, 512), went 471 -> 496-501
// GFLOP/s, at T100 B64 448 -> 493-503, and at T100 B64 H1024 449 -> 494-499.
constexpr int64_t kRowChunkBytes = int64_t(8) << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The widest tiles this CPU runs: AVX-512 unless RNNKERNELS_CPU_GEMM=avx2
// asks for AVX2 (to compare), then AVX2.
template <typename T>
TileFn<T> cpu_tile(bool wide, int rows, int np) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return wide ? avx512_tile_bf16(rows, np) : nullptr;
  } else if constexpr (std::is_same_v<T, float>) {
    return wide ? avx512_tile_f32(rows, np) : avx2_tile_f32(rows, np);
  } else {
    return wide ? avx512_tile_f64(rows, np) : avx2_tile_f64(rows, np);
  }
}

// Whether RNNKERNELS_CPU_GEMM is set to value (avx2, aten or bf16).
bool gemm_env_is(const char* value) {
  const char* env = std::getenv("RNNKERNELS_CPU_GEMM");
  return env != nullptr && std::strcmp(env, value) == 0;
}

bool wide_tiles() { return avx512_tile_f32(1, 1) != nullptr && !gemm_env_is("avx2"); }

// The tiles of one depth block: panels in the outer loop, so each panel's
// slice is read once while the rows of a (a few, at step shapes) stay in
// cache. The tile over the last, partly filled panel goes through a
// full-width scratch tile.
template <typename T>
struct TileTable {
  static constexpr int kMaxPanels = 8;
  TileFn<T> fn[kMaxTileRows + 1][kMaxPanels + 1]{};  // [rows][panels], null where none
  int np[kMaxTileRows + 1]{};                        // panels of a tile of `rows` rows
  // The most panels, up to n, that one tile of `rows` rows covers: a
  // thread's share of a small product can be fewer panels than np.
  int fit[kMaxTileRows + 1][kMaxPanels + 1]{};
  int max_rows;  // the tallest tile
  TileTable() {
    const bool wide = wide_tiles();
    max_rows = wide ? kMaxTileRows : kMaxAvx2TileRows;
    for (int r = 1; r <= max_rows; ++r) {
      np[r] = wide ? avx512_panels_per_tile(r) : panels_per_tile(r);
      fit[r][0] = 1;
      for (int p = 1; p <= kMaxPanels; ++p) {
        fn[r][p] = cpu_tile<T>(wide, r, p);
        fit[r][p] = fn[r][p] != nullptr ? p : fit[r][p - 1];
      }
    }
  }
  static const TileTable& get() {
    static const TileTable table;
    return table;
  }
};

template <typename T>
struct BlockRunner {
  using Acc = acc_t<T>;
  const T* panels;
  int64_t K, N;  // K padded to a whole depth group
  const TileTable<T>& tiles = TileTable<T>::get();

  // Rows [0, rows) of a (row stride lda, depth kc starting at k0) against
  // panels [p0, p1), into c (rows, ldc) whose column 0 is panel 0's,
  // starting from init (a row of N, or null) unless accumulate.
  void run(int64_t rows, const T* a, int64_t lda, int64_t k0, int64_t kc, int64_t p0, int64_t p1,
           Acc* c, int64_t ldc, bool accumulate, const Acc* init) const {
    constexpr int64_t NR = kPanelWidth<T>;
    // A step's few rows go in blocks as tall as the tiles allow, so that the
    // tiles read each panel fewer times: on a Zen 5, a step at batch 8 in one
    // block, not two, and (16, 512) x (512, 2048) in two, not three, 6-7%
    // faster (32 rows: 2%). Taller A goes in blocks of up to 6 rows, whose
    // four panels a tile make fewer passes over A: eight-row blocks made
    // (3200, 2048) x (2048, 512) 5-15% slower.
    constexpr int64_t kStepRows = 32, kTallBlockRows = 6;
    const int64_t blocks = ceil_div(rows, rows <= kStepRows ? tiles.max_rows : kTallBlockRows);
    const int tallest = static_cast<int>(ceil_div(rows, blocks));
    const int np = tiles.np[tallest];
    for (int64_t p = p0; p < p1;) {
      // Even groups of panels (13 at 4 a tile: 4, 3, 3, 3, not 4, 4, 4, 1):
      // a narrow tile runs at a fraction of a wide one's rate, and a partly
      // filled last panel joins a group, its tail masked (Tile::cols).
      const int64_t left = p1 - p;
      const int n_here = tiles.fit[tallest][ceil_div(left, ceil_div(left, np))];
      // The next group's panels (contiguous when the block is all of K)
      // come into L2 a share per row block, not all at once from L3 when
      // its first tile asks for them: at (64, 512) x (512, 2048) on a Xeon
      // with 2 MiB of L2, 5% faster, (64, 1024) x (1024, 4096) 10%. With one
      // row block there is no later tile to serve (17% slower).
      const int64_t next_lines =
          kc == K && blocks > 1
              ? std::min<int64_t>(n_here, p1 - p - n_here) * K * NR * sizeof(T) / 64
              : 0;
      const char* next = reinterpret_cast<const char*>(panels + (p + n_here) * K * NR);
      for (int64_t i = 0; i < blocks; ++i) {
        const int64_t l0 = next_lines * i / blocks, l1 = next_lines * (i + 1) / blocks;
        const int64_t r0 = rows * i / blocks, r1 = rows * (i + 1) / blocks;
        const Tile<T> t{kc,
                        a + r0 * lda,
                        lda,
                        panels + (p * K + k0) * NR,
                        K * NR,
                        c + r0 * ldc + p * NR,
                        ldc,
                        accumulate,
                        init != nullptr ? init + p * NR : nullptr,
                        N - p * NR,
                        next + 64 * l0,
                        l1 - l0};
        tiles.fn[r1 - r0][n_here](t);
      }
      p += n_here;
    }
  }
};

}  // namespace

bool panel_gemm_enabled(at::ScalarType dtype) {
  if (dtype == at::kBFloat16)
    return panel_gemm_enabled(at::kFloat) && wide_tiles() && avx512_tile_bf16(1, 1) != nullptr &&
           (cpu_bf16_dot_pays() || gemm_env_is("bf16"));
  if (dtype != at::kFloat && dtype != at::kDouble) return false;
  if (gemm_env_is("aten")) return false;
  return avx2_tile_f32(1, 1) != nullptr;
}

bool BFloat16Products::active() { return raised() && panel_gemm_enabled(at::kBFloat16); }

namespace {

// Depths [0, returned) of a whole panel of 32-bit columns (column j at
// col0 + j * ld, depth k at + k) moved into its rows, out[k * 16 + j]: 16 x
// 16 blocks transposed in AVX-512 registers (bits as they are), where the
// CPU has them (else none). Element by element, a (512, 2048) weight took
// 1.5x as long to pack, a (1024, 4096) one 2.5x.
int64_t transpose_columns(const float* col0, int64_t ld, int64_t K, float* out) {
  constexpr int64_t kBlock = 16;
  if (avx512_tile_f32(1, 1) == nullptr) return 0;
  int64_t k = 0;
  for (; k + kBlock <= K; k += kBlock) transpose_block(col0 + k, ld, out + k * kBlock, kBlock);
  return k;
}

// One panel (columns [n0, n0 + nv) of B(k, n) = b[k * sk + n * sn]) into
// out, already zeroed where it has padding.
template <typename T>
void pack_panel(T* out, const T* b, int64_t K, int64_t n0, int64_t nv, int64_t sk, int64_t sn) {
  constexpr int64_t NR = kPanelWidth<T>;
  if (sk == 1) {
    // Columns of b are contiguous (a weight used as w.t()): walk k once,
    // reading one element of each column, so every write fills a whole
    // panel row and every column's cache line serves 16 steps of k.
    int64_t k = 0;
    if constexpr (std::is_same_v<T, float>) {
      if (nv == NR) k = transpose_columns(b + n0 * sn, sn, K, out);
    }
    const T* col[NR];
    for (int64_t j = 0; j < nv; ++j) col[j] = b + (n0 + j) * sn;
    for (; k < K; ++k)
      for (int64_t j = 0; j < nv; ++j) out[k * NR + j] = col[j][k];
    return;
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* src = b + k * sk + n0 * sn;
    if (sn == 1 && nv == NR) {
      std::memcpy(out + k * NR, src, sizeof(T) * NR);  // a fixed size: inlined, no call
    } else if (sn == 1) {
      std::copy(src, src + nv, out + k * NR);
    } else {
      for (int64_t j = 0; j < nv; ++j) out[k * NR + j] = src[j * sn];
    }
  }
}

// The same from float into pairs of depths rounded to bfloat16.
void pack_panel(c10::BFloat16* out, const float* b, int64_t K, int64_t n0, int64_t nv, int64_t sk,
                int64_t sn) {
  constexpr int64_t NR = kPanelWidth<c10::BFloat16>;
  const int64_t half = ceil_div(K, 2);
  if (sk == 1) {
    // A column's pairs of depths are adjacent: round the columns, then place
    // each pair (32 bits) in its panel row.
    thread_local std::vector<c10::BFloat16> columns;
    columns.resize(nv * 2 * half);
    rows_to_bf16(b + n0 * sn, nv, K, sn, columns.data(), 2 * half);
    const uint32_t* pairs = reinterpret_cast<const uint32_t*>(columns.data());
    uint32_t* rows = reinterpret_cast<uint32_t*>(out);
    int64_t h = 0;
    if (nv == NR)
      h = transpose_columns(reinterpret_cast<const float*>(pairs), half, half,
                            reinterpret_cast<float*>(rows));
    for (; h < half; ++h)
      for (int64_t j = 0; j < nv; ++j) rows[h * NR + j] = pairs[j * half + h];
  } else if (sn == 1) {
    for (int64_t h = 0; h < half; ++h) {
      const float* even = b + 2 * h * sk + n0;
      pairs_to_bf16(even, 2 * h + 1 < K ? even + sk : nullptr, nv, out + h * 2 * NR);
    }
  } else {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < nv; ++j)
        out[(k / 2) * 2 * NR + j * 2 + k % 2] = c10::BFloat16(b[k * sk + (n0 + j) * sn]);
  }
}

// The same from bfloat16, whose pairs of depths only move: element (k, j)
// goes to panel row k / 2, half k % 2 of pair j.
void pack_panel(c10::BFloat16* out, const c10::BFloat16* b, int64_t K, int64_t n0, int64_t nv,
                int64_t sk, int64_t sn) {
  constexpr int64_t NR = kPanelWidth<c10::BFloat16>;
  auto place = [&](int64_t k, int64_t j) -> c10::BFloat16& {
    return out[(k / 2) * 2 * NR + j * 2 + k % 2];
  };
  if (sk == 1) {
    // A column's pairs of depths are adjacent: one 32-bit move each.
    uint32_t* rows = reinterpret_cast<uint32_t*>(out);
    int64_t h0 = 0;
    if (nv == NR && sn % 2 == 0)
      h0 = transpose_columns(reinterpret_cast<const float*>(b + n0 * sn), sn / 2, K / 2,
                             reinterpret_cast<float*>(rows));
    for (int64_t j = 0; j < nv; ++j) {
      const c10::BFloat16* col = b + (n0 + j) * sn;
      for (int64_t h = h0; h < K / 2; ++h) std::memcpy(rows + h * NR + j, col + 2 * h, 4);
      if (K % 2 == 1) place(K - 1, j) = col[K - 1];  // beside the zero padding
    }
    return;
  }
  if (sn == 1) {
    // Rows 2h and 2h + 1 of b interleave into panel row h (vectorized by the
    // compiler: widen, shift, or).
    uint32_t* rows = reinterpret_cast<uint32_t*>(out);
    for (int64_t h = 0; h < K / 2; ++h) {
      const uint16_t* even = reinterpret_cast<const uint16_t*>(b + 2 * h * sk + n0);
      const uint16_t* odd = even + sk;
      for (int64_t j = 0; j < nv; ++j) rows[h * NR + j] = even[j] | uint32_t(odd[j]) << 16;
    }
    if (K % 2 == 1)
      for (int64_t j = 0; j < nv; ++j) place(K - 1, j) = b[(K - 1) * sk + n0 + j];
    return;
  }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < nv; ++j) place(k, j) = b[k * sk + (n0 + j) * sn];
}

// Panels a thread packs at the least, for panels of `elements`.
int64_t pack_grain(int64_t elements) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elements));
}

}  // namespace

template <typename T>
template <typename S>
PanelMatrix<T>::PanelMatrix(const S* b, int64_t K, int64_t N, int64_t sk, int64_t sn, bool later)
    : K_(padded_depth<T>(K)), N_(N) {
  constexpr int64_t NR = kPanelWidth<T>;
  count_ = ceil_div(N, NR);
  // From the pool: a large weight's panels would be new pages every call.
  panels_ =
      workspace_empty({count_ * K_ * NR}, at::TensorOptions(c10::CppTypeToScalarType<T>::value));
  T* const dst = panels_.mutable_data_ptr<T>();
  data_ = dst;
  const int64_t Kp = K_;
  pack_ = [=](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * NR, nv = std::min(NR, N - n0);
      T* out = dst + p * Kp * NR;
      if (nv < NR || K < Kp) std::fill(out, out + Kp * NR, T(0));
      pack_panel(out, b, K, n0, nv, sk, sn);
    }
  };
  if (!later) at::parallel_for(0, count_, pack_grain(K_ * NR), pack_);
}

template <typename T>
void PanelMatrix<T>::multiply_panels(int64_t M, const T* a, int64_t lda, acc_t<T>* c, int64_t ldc,
                                     int64_t p0, int64_t p1, const acc_t<T>* init) const {
  p1 = std::min(p1, count_);
  if (M <= 0 || p0 >= p1) return;
  if (K_ == 0) {
    const int64_t n0 = p0 * kPanelWidth<T>, n1 = std::min(N_, p1 * kPanelWidth<T>);
    for (int64_t m = 0; m < M; ++m) {
      if (init != nullptr) {
        std::copy(init + n0, init + n1, c + m * ldc + n0);
      } else {
        std::fill(c + m * ldc + n0, c + m * ldc + n1, acc_t<T>(0));
      }
    }
    return;
  }
  const BlockRunner<T> runner{data_, K_, N_};
  const int64_t chunks = ceil_div(M * K_ * static_cast<int64_t>(sizeof(T)), kRowChunkBytes);
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t m0 = M * i / chunks, m1 = M * (i + 1) / chunks;
    for (int64_t k0 = 0; k0 < K_; k0 += kDepthBlock) {
      const int64_t kc = std::min(kDepthBlock, K_ - k0);
      runner.run(m1 - m0, a + m0 * lda + k0, lda, k0, kc, p0, p1, c + m0 * ldc, ldc, k0 > 0, init);
    }
  }
}

template <typename T>
void PanelMatrix<T>::multiply(int64_t M, const T* a, int64_t lda, acc_t<T>* c, int64_t ldc) const {
  at::parallel_for(0, count_, 1,
                   [&](int64_t p0, int64_t p1) { multiply_panels(M, a, lda, c, ldc, p0, p1); });
}

template <typename T>
void multiply_weight_rows(const WeightRowsProduct<T>& p) {
  constexpr int64_t NR = kPanelWidth<T>;
  // Blocks of b (steps' inputs) a row block of w runs against in turn: a
  // quarter of L2, so that they stay there while w's rows stream past. All
  // of a pass of 16 steps (1 MiB at B32 I512) came from L3 once per row
  // block: T500 B32 H512 inference on such passes ran 6-8% slower than on
  // packed weights that way, 3-6% this way.
  constexpr int64_t kBlockBytes = int64_t(256) << 10;
  const TileTable<T>& tiles = TileTable<T>::get();
  const int64_t panels = p.N / NR;
  // The tile shape with the most accumulators for these panels (B32: 8 rows
  // of 2 panels, B64: 6 rows of 4), its panels in even groups. A tile of
  // twelve rows of two panels (24 accumulators) made T10-T60 B32 H512 steps
  // no faster than these eight rows (456 against 453-457 GFLOP/s).
  int rows = 1, per = 1;
  for (int r = tiles.max_rows; r >= 1; --r) {
    const int64_t fits = std::min<int64_t>(tiles.np[r], panels);
    const int even = tiles.fit[r][ceil_div(panels, ceil_div(panels, fits))];
    if (r * even > rows * per) rows = r, per = even;
  }
  const int64_t group = std::max<int64_t>(1, kBlockBytes / (p.K * p.N * int64_t(sizeof(T))));
  for (int64_t s0 = 0; s0 < p.blocks; s0 += group) {
    const int64_t s1 = std::min(p.blocks, s0 + group);
    for (int64_t m0 = 0; m0 < p.M; m0 += rows) {
      const int r = static_cast<int>(std::min<int64_t>(rows, p.M - m0));
      for (int64_t s = s0; s < s1; ++s) {
        for (int64_t g = 0; g < panels;) {
          const int n = tiles.fit[r][std::min<int64_t>(per, panels - g)];
          Tile<T> t{};
          t.K = p.K;
          t.a = p.w + m0 * p.ldw;
          t.lda = p.ldw;
          t.b = p.b + s * p.b_block + g * NR;
          t.panel_stride = NR;  // b's panels are adjacent columns
          t.ldb = p.ldb;
          t.c = p.c + s * p.c_block + m0 * p.ldc + g * NR;
          t.ldc = p.ldc;
          t.row_init = p.bias != nullptr ? p.bias + m0 : nullptr;
          tiles.fn[r][n](t);
          g += n;
        }
      }
    }
  }
}

template void multiply_weight_rows(const WeightRowsProduct<float>&);
template void multiply_weight_rows(const WeightRowsProduct<double>&);

template class PanelMatrix<float>;
template class PanelMatrix<double>;
template class PanelMatrix<c10::BFloat16>;
template PanelMatrix<float>::PanelMatrix(const float*, int64_t, int64_t, int64_t, int64_t, bool);
template PanelMatrix<double>::PanelMatrix(const double*, int64_t, int64_t, int64_t, int64_t, bool);
template PanelMatrix<c10::BFloat16>::PanelMatrix(const float*, int64_t, int64_t, int64_t, int64_t,
                                                 bool);
template PanelMatrix<c10::BFloat16>::PanelMatrix(const c10::BFloat16*, int64_t, int64_t, int64_t,
                                                 int64_t, bool);

namespace {

// Float or bfloat16 B (K, N), or its transpose, packed into bfloat16 panels
// (with `later`, by pack()).
PanelMatrix<c10::BFloat16> bf16_panels(const at::Tensor& b, bool transposed, bool later = false) {
  const int64_t k = transposed ? 1 : 0;
  if (b.scalar_type() == at::kBFloat16)  // a weight kept in bfloat16 (BFloat16Weights)
    return PanelMatrix<c10::BFloat16>(b.const_data_ptr<c10::BFloat16>(), b.size(k), b.size(1 - k),
                                      b.stride(k), b.stride(1 - k), later);
  return PanelMatrix<c10::BFloat16>(b.const_data_ptr<float>(), b.size(k), b.size(1 - k),
                                    b.stride(k), b.stride(1 - k), later);
}

}  // namespace

template <typename T>
StepMatrix<T>::StepMatrix(const at::Tensor& b, bool later) : b_(b) {
  if constexpr (std::is_same_v<T, float>) {
    if (BFloat16Products::active()) {
      bf16_.emplace(bf16_panels(b, false, later));
      return;
    }
  }
  if (panel_gemm_enabled(b.scalar_type()))
    packed_.emplace(b.const_data_ptr<T>(), b.size(0), b.size(1), b.stride(0), b.stride(1), later);
}

template <typename T>
std::vector<StepMatrix<T>> StepMatrix<T>::together(at::TensorList bs) {
  std::vector<StepMatrix<T>> out;
  out.reserve(bs.size());
  // Matrix m's panels are [first[m], first[m + 1]) of the joint count.
  std::vector<int64_t> first{0};
  int64_t elements = 0;  // of the largest panel
  for (const at::Tensor& b : bs) {
    const StepMatrix<T>& s = out.emplace_back(b, true);
    const int64_t count = s.packed_ ? s.packed_->count() : s.bf16_ ? s.bf16_->count() : 0;
    const int64_t depth = s.packed_ ? s.packed_->depth() : s.bf16_ ? s.bf16_->depth() : 0;
    first.push_back(first.back() + count);
    elements = std::max(elements, depth * kStepColumns<T>);
  }
  at::parallel_for(0, first.back(), pack_grain(elements), [&](int64_t g0, int64_t g1) {
    for (size_t m = 0; m < out.size(); ++m) {
      const int64_t p0 = std::max(g0, first[m]) - first[m],
                    p1 = std::min(g1, first[m + 1]) - first[m];
      if (p0 >= p1) continue;
      if (out[m].packed_) out[m].packed_->pack(p0, p1);
      if (out[m].bf16_) out[m].bf16_->pack(p0, p1);
    }
  });
  return out;
}

template <typename T>
void StepMatrix<T>::multiply(int64_t M, const T* a, int64_t lda, T* c, int64_t ldc, int64_t n0,
                             int64_t n1, const T* init) const {
  if (M <= 0 || n0 >= n1) return;
  // A share that did not start on a panel would write its neighbour's
  // columns; the callers' shares are whole panels.
  assert(n0 % kStepColumns<T> == 0 && (n1 % kStepColumns<T> == 0 || n1 == b_.size(1)));
  if constexpr (std::is_same_v<T, float>) {
    if (bf16_) {
      // a rounded to bfloat16 rows: a few rows per step, cheap beside the product.
      const int64_t K = b_.size(0), K2 = padded_depth<c10::BFloat16>(K);
      thread_local std::vector<c10::BFloat16> rows;
      rows.resize(M * K2);
      rows_to_bf16(a, M, K, lda, rows.data(), K2);
      multiply(M, rows.data(), K2, c, ldc, n0, n1, init);
      return;
    }
  }
  if (packed_) {
    packed_->multiply_panels(M, a, lda, c, ldc, n0 / kStepColumns<T>, ceil_div(n1, kStepColumns<T>),
                             init);
    return;
  }
  const int64_t K = b_.size(0);
  const auto opts = b_.options();
  at::Tensor out = at::from_blob(c + n0, {M, n1 - n0}, {ldc, 1}, opts);
  const at::Tensor a_rows = at::from_blob(const_cast<T*>(a), {M, K}, {lda, 1}, opts);
  if (init != nullptr) {
    at::addmm_out(out, at::from_blob(const_cast<T*>(init) + n0, {n1 - n0}, opts), a_rows,
                  b_.narrow(1, n0, n1 - n0));
  } else {
    at::mm_out(out, a_rows, b_.narrow(1, n0, n1 - n0));
  }
}

template <typename T>
void StepMatrix<T>::multiply(int64_t M, const c10::BFloat16* a, int64_t lda, T* c, int64_t ldc,
                             int64_t n0, int64_t n1, const T* init) const {
  if constexpr (std::is_same_v<T, float>) {
    assert(bf16_);
    if (M <= 0 || n0 >= n1) return;
    assert(n0 % kStepColumns<T> == 0 && (n1 % kStepColumns<T> == 0 || n1 == b_.size(1)));
    bf16_->multiply_panels(M, a, lda, c, ldc, n0 / kStepColumns<T>, ceil_div(n1, kStepColumns<T>),
                           init);
  } else {
    assert(false && "double products never round to bfloat16");
  }
}

template class StepMatrix<float>;
template class StepMatrix<double>;

namespace {

// out (M, ldo) = a^T for a contiguous (K, M), in O (bfloat16 rounded from
// float), columns [K, ldo) zeroed. Each 16 x 16 block is transposed in a
// small buffer, so that every cache line of a and of out is touched once,
// whole: read element by element, a's columns (M apart) all fall in the same
// few cache sets, and that transpose cost a third of the GEMM it served.
template <typename O, typename I>
void transpose_rows(const I* a, int64_t K, int64_t M, O* out, int64_t ldo) {
  constexpr int64_t kBlock = 16;
  // Whole blocks of a float or bfloat16 a kept as it is move in registers.
  constexpr bool same = std::is_same_v<O, I> && !std::is_same_v<I, double>;
  const bool registers = same && avx512_tile_f32(1, 1) != nullptr;
  at::parallel_for(0, ceil_div(M, kBlock), 1, [&](int64_t b0, int64_t b1) {
    I block[kBlock][kBlock];  // [j][i]: rows of a^T
    for (int64_t j0 = b0 * kBlock; j0 < std::min(M, b1 * kBlock); j0 += kBlock) {
      const int64_t nj = std::min(kBlock, M - j0);
      for (int64_t i0 = 0; i0 < K; i0 += kBlock) {
        const int64_t ni = std::min(kBlock, K - i0);
        if constexpr (same) {
          if (registers && ni == kBlock && nj == kBlock) {
            transpose_block(a + i0 * M + j0, M, out + j0 * ldo + i0, ldo);
            continue;
          }
        }
        for (int64_t i = 0; i < ni; ++i) {
          const I* src = a + (i0 + i) * M + j0;
          for (int64_t j = 0; j < nj; ++j) block[j][i] = src[j];
        }
        for (int64_t j = 0; j < nj; ++j) {
          O* row = out + (j0 + j) * ldo + i0;
          if constexpr (!std::is_same_v<O, I>) {
            rows_to_bf16(block[j], 1, ni, kBlock, row, padded_depth<O>(ni));
          } else if (ni == kBlock) {
            for (int64_t i = 0; i < kBlock; ++i) row[i] = block[j][i];
          } else {
            std::copy(block[j], block[j] + ni, row);
          }
        }
      }
      for (int64_t j = j0; j < j0 + nj; ++j)
        std::fill(out + j * ldo + K, out + (j + 1) * ldo, O(0));
    }
  });
}

// Float or bfloat16 a and b (a bfloat16 input, weight or dG of a bfloat16
// call) multiplied as bfloat16 products.
bool bf16_operands(const at::Tensor& a, const at::Tensor& b) {
  auto narrow_or_float = [](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
  };
  return narrow_or_float(a) && narrow_or_float(b) && a.device().is_cpu() &&
         BFloat16Products::active();
}

}  // namespace

std::vector<at::Tensor> gemm_tn(const at::Tensor& a, at::TensorList bs) {
  std::vector<at::Tensor> outs;
  const bool bf16 =
      std::all_of(bs.begin(), bs.end(), [&](const at::Tensor& b) { return bf16_operands(a, b); });
  const bool panels =
      std::all_of(bs.begin(), bs.end(),
                  [&](const at::Tensor& b) {
                    return b.scalar_type() == a.scalar_type() && b.device().is_cpu();
                  }) &&
      panel_gemm_enabled(a.scalar_type()) && a.device().is_cpu();
  if (!bf16 && !panels) {
    for (const at::Tensor& b : bs) outs.push_back(at::mm(a.t(), b));
    return outs;
  }
  const at::Tensor ac = a.contiguous();
  const int64_t K = a.size(0), M = a.size(1);
  // a^T laid out as rows for the tiles. Read in place, a's columns are M
  // apart: at M = 4H = 2048 that stride maps every depth of a tile to the
  // same few cache sets, and the tiles ran at half speed.
  if (bf16) {
    const int64_t K2 = padded_depth<c10::BFloat16>(K);
    at::Tensor rows = workspace_empty({M, K2}, a.options().dtype(at::kBFloat16));
    if (a.scalar_type() == at::kBFloat16) {
      transpose_rows(ac.const_data_ptr<c10::BFloat16>(), K, M,
                     rows.mutable_data_ptr<c10::BFloat16>(), K2);
    } else {
      transpose_rows(ac.const_data_ptr<float>(), K, M, rows.mutable_data_ptr<c10::BFloat16>(), K2);
    }
    for (const at::Tensor& b : bs) {
      outs.push_back(workspace_empty({M, b.size(1)}, a.options().dtype(at::kFloat)));
      bf16_panels(b, false).multiply(M, rows.const_data_ptr<c10::BFloat16>(), K2,
                                     outs.back().mutable_data_ptr<float>(), b.size(1));
    }
    return outs;
  }
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkernels_gemm_tn", [&] {
    at::Tensor rows = workspace_empty({M, K}, a.options());
    transpose_rows(ac.const_data_ptr<scalar_t>(), K, M, rows.mutable_data_ptr<scalar_t>(), K);
    for (const at::Tensor& b : bs) {
      const int64_t N = b.size(1);
      outs.push_back(workspace_empty({M, N}, a.options()));
      const PanelMatrix<scalar_t> panels(b.const_data_ptr<scalar_t>(), K, N, b.stride(0),
                                         b.stride(1));
      panels.multiply(M, rows.const_data_ptr<scalar_t>(), K,
                      outs.back().mutable_data_ptr<scalar_t>(), N);
    }
  });
  return outs;
}

at::Tensor bf16_rows(const at::Tensor& x) {
  const int64_t M = x.size(0), K = x.size(1), K2 = padded_depth<c10::BFloat16>(K);
  if (x.scalar_type() == at::kBFloat16) {
    if (K2 == K && x.is_contiguous()) return x;  // already such rows
    at::Tensor rows = workspace_empty({M, K2}, x.options());
    rows.narrow(1, K, K2 - K).zero_();
    rows.narrow(1, 0, K).copy_(x);
    return rows;
  }
  const at::Tensor xc = x.contiguous();
  at::Tensor rows = workspace_empty({M, K2}, x.options().dtype(at::kBFloat16));
  const float* src = xc.const_data_ptr<float>();
  c10::BFloat16* dst = rows.mutable_data_ptr<c10::BFloat16>();
  at::parallel_for(0, M, 256, [&](int64_t r0, int64_t r1) {
    rows_to_bf16(src + r0 * K, r1 - r0, K, K, dst + r0 * K2, K2);
  });
  return rows;
}

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& w) {
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  if (bf16_operands(x, w)) {
    at::Tensor out = workspace_empty({M, N}, x.options().dtype(at::kFloat));
    const at::Tensor rows = bf16_rows(x);
    const PanelMatrix<c10::BFloat16> panels = bf16_panels(w, true);
    panels.multiply(M, rows.const_data_ptr<c10::BFloat16>(), rows.size(1),
                    out.mutable_data_ptr<float>(), N);
    return out;
  }
  if (!panel_gemm_enabled(x.scalar_type()) || w.scalar_type() != x.scalar_type())
    return at::mm(x, w.t());
  at::Tensor out = workspace_empty({M, N}, x.options());
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkernels_linear", [&] {
    // B(k, n) = w[n, k].
    const PanelMatrix<scalar_t> panels(w.const_data_ptr<scalar_t>(), K, N, w.stride(1),
                                       w.stride(0));
    panels.multiply(M, xc.const_data_ptr<scalar_t>(), K, out.mutable_data_ptr<scalar_t>(), N);
  });
  return out;
}

at::Tensor step_matmul(const at::Tensor& a, const at::Tensor& b, int64_t repeats) {
  TORCH_CHECK(repeats >= 1, "step_matmul: repeats must be positive, got ", repeats);
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, "step_matmul: expected 2-D a and b, got ", a.dim(),
              "-D and ", b.dim(), "-D");
  TORCH_CHECK(a.size(1) == b.size(0), "step_matmul: a is ", a.sizes(), " but b is ", b.sizes());
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "step_matmul: expected CPU tensors");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "step_matmul: a is ", a.scalar_type(),
              " but b is ", b.scalar_type());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble ||
                  a.scalar_type() == at::kBFloat16,
              "step_matmul: expected float, double or bfloat16, got ", a.scalar_type());
  if (a.scalar_type() == at::kBFloat16) {
    // Float products on bfloat16 panels, as a bfloat16 call of the op runs them.
    const BFloat16Products scope;
    return step_matmul(a.to(at::kFloat), b.to(at::kFloat), repeats);
  }
  const at::Tensor ac = a.contiguous();
  const int64_t M = a.size(0), N = b.size(1);
  at::Tensor out = at::empty({M, N}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkernels_step_matmul", [&] {
    constexpr int64_t NC = kStepColumns<scalar_t>;
    const StepMatrix<scalar_t> w(b);
    at::parallel_for(0, (N + NC - 1) / NC, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t r = 0; r < repeats; ++r)
        w.multiply(M, ac.const_data_ptr<scalar_t>(), ac.size(1), out.mutable_data_ptr<scalar_t>(),
                   N, p0 * NC, std::min(N, p1 * NC));
    });
  });
  return out;
}

}  // namespace rnnkernels

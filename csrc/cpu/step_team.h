// The threads of one time loop. A step is too short to open a parallel
// region for (waking threads costs about as much as a small step's work), so
// the CPU kernels open one region for the whole loop and the threads meet at
// a barrier where a step needs all of another thread's results. A layer's
// two directions may instead run at once, one thread each (run_directions).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <stdint.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "../lstm_args.h"
#include "gemm_tiles.h"
#include "panel_gemm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnkernels {

// Below this many flops in one step's recurrent product the loop runs on one
// thread: the barriers would cost more than the split saves.
constexpr double kTeamStepFlops = 2e5;

// The flops of one step's recurrent product, (B, P) x (P, 4H), forward or
// backward.
inline double step_flops(int64_t B, int64_t H, int64_t P) { return 2.0 * B * P * 4 * H; }

// How many threads a loop whose steps each cost step_flops should use when
// its work splits into `shares` independent parts. Only loops that call
// nothing from ATen may have more than one (see run_team).
inline int team_size(double step_flops, int64_t shares, bool aten_free) {
  if (!aten_free || step_flops < kTeamStepFlops || at::in_parallel_region()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), shares)));
}

struct Team {
  int id = 0;
  int size = 1;
  // Every thread of the team waits here until all have arrived.
  void barrier() const {
#ifdef _OPENMP
    if (size > 1) {
#pragma omp barrier
    }
#endif
  }
};

// How one LSTM time loop splits between the threads of a team, one of two
// ways:
// - by units: each thread owns blocks of `block` units (a panel of the
//   per-step products) and of h's columns, for every sample, and the threads
//   meet at a barrier where a step needs all of h;
// - by samples: each thread owns a range of samples, all units. No thread
//   reads another's rows, so there is no barrier and no h crosses between
//   cores, but each thread reads all of the weights every step: taken where
//   the weights fit in half a core's L2 (small H), where even a thread's
//   share of them under a split by units would not, or where each thread has
//   enough samples to multiply by every weight it reads from further out. At
//   T100 B64 on 2 threads, inference went 1.0x -> 1.3x nn.LSTM at H128 and
//   1.12x -> 1.8x at H64; at H512 (8 MiB of weights) B8 lost 20%. With 2 MiB
//   of L2 a core, H256's backward (1 MiB of w_hh) runs faster by samples;
//   its forward (w_ih too) at B8 and B16 did not.
struct StepSplit {
  // Split by samples where the loop's weights take at most half of L2, or
  // at most kBytesPerSample for each of a thread's samples (measured: H256
  // from B32 on, H512 never in float32), or where a thread's share of them
  // would not fit in half of L2 either but a step's do fit in L2 and a
  // thread has a full tile of samples (kTileSamples); and the batch has
  // kMinSamples a thread.
  static constexpr int64_t kBytesPerSample = int64_t(1) << 17, kMinSamples = 4;
  // Or where a step's recurrent product gives each thread a full tile of
  // samples and at most this many flops: a step that short loses more at the
  // barriers of a split by units (two a step with a projection) than reading
  // all of the weights costs it. Measured on a Zen 5, the time by units over
  // the time by samples, inference / training step: T50 B16 H512 P128
  // 1.03-1.06 / 1.14-1.16, B24 1.07 / 1.17, B16 H512 P256 0.99 / 1.05, B16
  // H320 1.03 / 1.02; at B16 H512 without a projection (16.8 Mflop a thread)
  // the split by units stays ahead.
  static constexpr double kSampleStepFlops = 1e7;
  // The rows of the tallest tile (gemm_tiles.h): fewer samples a thread run
  // on shorter tiles, which read the panels at a lower rate.
  static constexpr int64_t kTileSamples = kMaxTileRows;

  // For steps whose recurrent product is (B, P) x (P, 4H) and a loop that
  // reads weight_bytes of weights, step_bytes of them every step. Units set
  // the count of a split by units: a thread whose share of h's columns is
  // empty (a projection narrower than the team) still has units to work on.
  StepSplit(const StepRows& steps, int64_t H, int64_t P, int64_t block, int64_t weight_bytes,
            int64_t step_bytes, bool aten_free)
      : H_(H), P_(P), B_(steps.B()), block_(block) {
    const double flops = step_flops(B_, H, P);
    const int by_units = team_size(flops, unit_blocks(), aten_free);
    const int by_samples = team_size(flops, B_ / kMinSamples, aten_free);
    // RNNKERNELS_CPU_SPLIT=units or =samples picks one way, to compare.
    const char* env = std::getenv("RNNKERNELS_CPU_SPLIT");
    const std::string forced = env != nullptr ? env : "";
    const int64_t per_thread = B_ / std::max(1, by_samples);
    // A split by units keeps a thread's share of the weights in its L2; where
    // even that share takes more than half of L2, it loses that and keeps the
    // barriers, so a step whose weights fit in L2 runs better by samples (a
    // Zen 4 with 1 MiB of L2: H256's inference at B16 2-6% faster), unless
    // that leaves a thread fewer samples than a tile's rows: at B8 the split
    // by units multiplies all 8 rows in one tile, where by samples each
    // thread had 4 (a Zen 5: H256's inference at T35-T500 B8 7-10% faster by
    // units, its training step 0-6%).
    const int64_t l2 = l2_bytes();
    const bool shares_spill = weight_bytes > l2 / 2 * std::max(1, by_units) && step_bytes <= l2 &&
                              per_thread >= kTileSamples;
    const bool short_step = per_thread >= kTileSamples && flops / by_samples <= kSampleStepFlops;
    const bool samples =
        forced == "samples" ||
        (forced != "units" && (weight_bytes <= l2 / 2 || shares_spill || short_step ||
                               weight_bytes <= kBytesPerSample * per_thread));
    if (by_samples > 1 && samples) {
      threads = by_samples;
      // Equal shares of the tokens: packed samples are sorted by length.
      std::vector<int64_t> tokens(B_ + 1, 0);
      for (int64_t b = 0; b < B_; ++b) tokens[b + 1] = tokens[b] + steps.length(b);
      edges_.push_back(0);
      for (int k = 1; k < threads; ++k) {
        const int64_t want = tokens[B_] * k / threads;
        edges_.push_back(std::lower_bound(tokens.begin(), tokens.end(), want) - tokens.begin());
      }
      edges_.push_back(B_);
    } else {
      threads = by_units;
    }
  }

  int threads = 1;
  bool by_samples() const { return !edges_.empty(); }

  // A core's L2, or 1 MiB where the system does not say.
  static int64_t l2_bytes() {
#ifdef _SC_LEVEL2_CACHE_SIZE
    static const int64_t bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (bytes > 0) return bytes;
#endif
    return int64_t(1) << 20;
  }

  // One thread's units [u0, u1), columns of h [p0, p1) and samples [b0, b1);
  // `shared` when other threads work on the same samples (a split by units),
  // so that the thread must wait at the team's barriers.
  struct Range {
    int64_t u0, u1, p0, p1, b0, b1;
    bool shared;
    // How many of the first nb samples (a step's) are this thread's.
    int64_t rows(int64_t nb) const { return std::max<int64_t>(0, std::min(b1, nb) - b0); }
  };
  Range range(const Team& team) const {
    if (!edges_.empty()) {
      // The runtime may give the team fewer threads than asked for
      // (OMP_DYNAMIC, OMP_THREAD_LIMIT): each takes whole shares then.
      const int n = static_cast<int>(edges_.size()) - 1;
      const int lo = team.id * n / team.size, hi = (team.id + 1) * n / team.size;
      return {0, H_, 0, P_, edges_[lo], edges_[hi], false};
    }
    // Thread k's share of `count` blocks starts at block count * k / team.size;
    // edge() gives that in units or columns.
    auto edge = [&](int64_t count, int k) { return count * k / team.size * block_; };
    const int64_t units = unit_blocks(), columns = (P_ + block_ - 1) / block_;
    return {edge(units, team.id),
            std::min(H_, edge(units, team.id + 1)),
            edge(columns, team.id),
            std::min(P_, edge(columns, team.id + 1)),
            0,
            B_,
            team.size > 1};
  }

 private:
  int64_t unit_blocks() const { return (H_ + block_ - 1) / block_; }
  int64_t H_, P_, B_, block_;
  std::vector<int64_t> edges_;  // a split by samples: thread k's are [edges_[k], edges_[k+1])
};

// Runs body(team) on `threads` threads. With more than one, the body must not
// throw (no exception may leave an OpenMP region, and a thread that left
// early would strand the others at a barrier) and must not call ATen (the
// threads do not carry the caller's dispatcher state).
template <typename F>
void run_team(int threads, const F& body) {
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      const Team team{omp_get_thread_num(), omp_get_num_threads()};
      body(team);
    }
    return;
  }
#endif
  body(Team{});
}

// Whether a layer's directions should run at once, one thread each
// (run_directions), for steps of B samples, H units and P outputs and a
// direction's loop reading weight_bytes of weights. Always where a
// direction's steps are too small to split (kTeamStepFlops): one after the
// other, each would leave the other threads idle (T100 B1 I1024 H64:
// inference 1.89x faster together, a training step 1.43x; measured with
// `python -m bench.probe ways`). Else each core streams all of its direction's
// weights every step, where split by units it streams half of both
// directions' in turn. Measured on a Zen 5 (1 MiB of L2 a core), the time
// apart over the time together, bidirectional, inference / training step
// (whose backward loop reads only w_hh):
// - weights within half of L2, any batch: T100 B1 H64 1.69 / 1.40, B1
//   H128 1.87 / 1.59;
// - up to twice L2 from a tile's rows (kTileSamples) of samples: H256 at
//   T100 B8 1.04 / 1.06, T50 B16 1.03 / 1.03, B32 and B64 1.00-1.01; but
//   with fewer, T100 B1 H256 0.67 / 0.77, B4 0.99 / 1.01;
// - beyond: H512 at T100 B4 0.83 / 0.95, B8 0.97 / 0.99, B64 1.00; T35 B20
//   H650 0.99 / 1.00.
inline bool directions_together(int64_t B, int64_t H, int64_t P, int64_t weight_bytes) {
  const int64_t l2 = StepSplit::l2_bytes();
  return step_flops(B, H, P) < kTeamStepFlops || weight_bytes <= l2 / 2 ||
         (B >= StepSplit::kTileSamples && weight_bytes <= 2 * l2);
}

// Runs body(k) for each direction k of a layer whose loops are as
// directions_together's: at once, one thread each, where that says so and
// ATen has one thread a direction, or more where each direction's steps are
// too small to split anyway; else one after the other, each splitting its
// steps between all of ATen's threads (StepSplit). A direction alone on a core meets no barrier and
// shares no rows with another core. The workers run under the caller's ATen state and its bfloat16
// products (BFloat16Products), which are per thread. RNNKERNELS_CPU_DIRECTIONS=together or =apart
// picks one way, to compare.
template <typename F>
void run_directions(int64_t count, int64_t B, int64_t H, int64_t P, int64_t weight_bytes,
                    const F& body) {
  const char* env = std::getenv("RNNKERNELS_CPU_DIRECTIONS");
  const std::string forced = env != nullptr ? env : "";
  const bool alone = step_flops(B, H, P) < kTeamStepFlops;
  const bool together =
      forced == "together" || (forced != "apart" && directions_together(B, H, P, weight_bytes));
  const int threads = at::get_num_threads();
  if (count > 1 && together && (threads == count || (alone && threads > count)) &&
      !at::in_parallel_region()) {
    const at::ThreadLocalState state;
    const bool bf16 = BFloat16Products::raised();
    at::parallel_for(0, count, 1, [&](int64_t k0, int64_t k1) {
      const at::ThreadLocalStateGuard guard(state);
      std::optional<BFloat16Products> products;
      if (bf16) products.emplace();
      for (int64_t k = k0; k < k1; ++k) body(k);
    });
    return;
  }
  for (int64_t k = 0; k < count; ++k) body(k);
}

}  // namespace rnnkernels

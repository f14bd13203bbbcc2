// The threads of one time loop. A step is too short to open a parallel
// region for (waking threads costs about as much as a small step's work), so
// the CPU kernels open one region for the whole loop and the threads meet at
// a barrier where a step needs all of another thread's results.
#pragma once

#include <ATen/Parallel.h>
#include <stdint.h>

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnkernels {

// Below this many flops in one step's recurrent product the loop runs on one
// thread: the barriers would cost more than the split saves.
constexpr double kTeamStepFlops = 2e5;

// How many threads a loop whose steps each cost step_flops should use when
// its work splits into `shares` independent parts. Only loops that call
// nothing from ATen may have more than one (see run_team).
inline int team_size(double step_flops, int64_t shares, bool aten_free) {
  if (!aten_free || step_flops < kTeamStepFlops || at::in_parallel_region()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), shares)));
}

// The part [begin, end) of `count` items that thread `id` of `threads` owns.
struct Share {
  int64_t begin, end;
};
inline Share share_of(int64_t count, int id, int threads) {
  return {count * id / threads, count * (id + 1) / threads};
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

// How one LSTM time loop splits between the threads of a team: H units and
// the P columns of h, in blocks of `block` columns (a panel of the per-step
// products, so that a thread's columns are whole panels). With P == H the
// two splits coincide.
struct StepSplit {
  int64_t H, P, block;

  int64_t unit_blocks() const { return (H + block - 1) / block; }

  // Threads for steps whose recurrent product is (B, P) x (P, 4H). Units set
  // the count: a thread whose share of h's columns is empty (a projection
  // narrower than the team) still has units to work on.
  int threads(int64_t B, bool aten_free) const {
    return team_size(2.0 * B * P * 4 * H, unit_blocks(), aten_free);
  }

  // Units [u0, u1) and columns of h [p0, p1) of one thread.
  struct Range {
    int64_t u0, u1, p0, p1;
  };
  Range range(const Team& team) const {
    const Share u = share_of(unit_blocks(), team.id, team.size);
    const Share p = share_of((P + block - 1) / block, team.id, team.size);
    return {u.begin * block, std::min(H, u.end * block), p.begin * block,
            std::min(P, p.end * block)};
  }
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

}  // namespace rnnkernels

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

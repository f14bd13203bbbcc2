#pragma once
#include <ATen/Parallel.h>
#include <stdint.h>

#include <algorithm>

namespace rnnkernels {

// Units per task of a per-step gate pass: a task takes a span of one row.
// Spans are a multiple of every SIMD width, and a task should be worth waking
// a thread for, which with vectorised activations takes about a thousand units.
constexpr int64_t kSpan = 64;
constexpr int64_t kGatePassGrain = 1024;

// Runs fn(b, j0, j1) over rows [0, rows) of H units each, split into spans
// and spread over threads.
template <typename F>
void for_each_span(int64_t rows, int64_t H, const F& fn) {
  const int64_t spans_per_row = (H + kSpan - 1) / kSpan;
  const int64_t grain = std::max<int64_t>(1, kGatePassGrain / std::min(H, kSpan));
  at::parallel_for(0, rows * spans_per_row, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / spans_per_row, j0 = (u % spans_per_row) * kSpan;
      fn(b, j0, std::min(j0 + kSpan, H));
    }
  });
}

}  // namespace rnnkernels

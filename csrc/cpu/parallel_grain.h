#pragma once
#include <stdint.h>

namespace rnnkernels {
// Elements of a per-step gate pass handed to one thread at a time. Each
// element costs several transcendental functions, so far fewer elements than
// ATen's default grain already pay for waking a thread.
constexpr int64_t kGatePassGrain = 512;
}  // namespace rnnkernels

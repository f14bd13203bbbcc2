// Large CPU buffers of the op, recycled across calls: its activations and
// scratch, and the outputs and gradients it returns. A fresh buffer above
// glibc's trim threshold is new pages on most calls, and first-touch page
// faults cost about as much as a step's arithmetic at common sizes; a freed
// buffer goes back to a pool here, already mapped, for the next call.
// RNNKERNELS_CPU_WORKSPACE_MB caps the pool (default 1024; 0 turns it off).
#pragma once

#include <ATen/ATen.h>

namespace rnnkernels {

// at::empty for CPU tensors, from the pool when large enough to matter:
// ordinary tensors (resizable, shareable) whose memory returns to the pool
// when the last of them is freed, so the op may hand them to its caller.
at::Tensor workspace_empty(at::IntArrayRef shape, const at::TensorOptions& options);

// Bytes of the pool's blocks held by tensors and kept for later calls, and
// how many blocks it gave back to malloc above its cap: what tests check.
struct WorkspaceStats {
  int64_t in_use, cached, evictions;
};
WorkspaceStats workspace_stats();

}  // namespace rnnkernels

// Large CPU buffers of the op, recycled across calls. A fresh buffer above
// glibc's mmap threshold is new pages every call, and first-touch page
// faults cost about as much as a step's arithmetic at common sizes; a freed
// buffer goes back to a pool here, already mapped, for the next call.
// RNNKERNELS_CPU_WORKSPACE_MB caps the pool (default 1024; 0 turns it off).
#pragma once

#include <ATen/ATen.h>

namespace rnnkernels {

// at::empty for CPU tensors, from the pool when large enough to matter.
at::Tensor workspace_empty(at::IntArrayRef shape, const at::TensorOptions& options);

}  // namespace rnnkernels

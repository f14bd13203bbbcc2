// Device-side helpers shared by the .cu files: storage/accumulation types,
// conversions, the dtype switch, launch geometry and a step's time
// bookkeeping. nvcc only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../lstm_math.h"
#include "lstm_kernels.h"

namespace rnnkernels {
namespace cuda {

// Arithmetic type of a storage type: fp32 for the half types.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_acc<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Calls fn(T{}) with the storage type named by dt.
template <typename Fn>
cudaError_t dispatch(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::kFloat:
      return fn(float{});
    case DType::kDouble:
      return fn(double{});
    case DType::kHalf:
      return fn(__half{});
    case DType::kBFloat16:
      return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// How sample b's step meets the one before it, and whether its state was
// reset or its gradient is cut there (csrc/lstm_math.h).
__device__ __forceinline__ StepEdge edge_of(const Step& s, int64_t b) {
  return step_edge(s.t, b, s.reverse, s.batch_next);
}
__device__ __forceinline__ bool zeroed_before(const Step& s, int64_t b) {
  return reset_before(edge_of(s, b), s.reverse, s.reset, s.B, b);
}
__device__ __forceinline__ bool cut_at(const Step& s, int64_t b) {
  return cut_before(edge_of(s, b), s.reverse, s.window, s.reset, s.B, b);
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements; the kernels loop over the
// rest, so the grid stays well inside the x-dimension limit.
inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

// Launches a grid-stride kernel over n elements for the storage type dt:
// launch(tag, blocks) starts the kernel instantiated for decltype(tag).
template <typename Launch>
cudaError_t launch_for(DType dt, int64_t n, Launch&& launch) {
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    launch(tag, grid_for(n));
    return cudaGetLastError();
  });
}

#define RNNK_GRID_LOOP(idx, n)                                                               \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < (n); \
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)

}  // namespace cuda
}  // namespace rnnkernels

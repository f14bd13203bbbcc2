// Per-step forward kernels of the cuBLAS path: the fused gate pass and the
// copy of projected h into y.
#include "../lstm_math.h"
#include "device_types.h"

namespace rnnkernels {
namespace cuda {
namespace {

__device__ __forceinline__ const bool* reset_row(const TimeArgs& time,
                                                 int64_t b) {
  return time.reset != nullptr ? time.reset + b : nullptr;
}

template <typename T>
__global__ void forward_gates_kernel(ForwardGateArgs a) {
  using A = acc_t<T>;
  const int64_t H = a.d.H, B = a.d.B, n = a.nb * H;
  const T* G = static_cast<const T*>(a.G);
  const T* R = static_cast<const T*>(a.R);
  T* c = static_cast<T*>(a.c);
  T* h = static_cast<T*>(a.h_or_r);
  T* y = static_cast<T*>(a.y);
  T* gates = static_cast<T*>(a.gates);
  T* cells = static_cast<T*>(a.cells);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       idx < n; idx += stride) {
    const int64_t b = idx / H, j = idx - b * H;
    const int64_t len = a.time.lens[b];
    const int64_t t = step_time(a.s, len, a.time.reverse);
    // A reset sample starts from zero state: no recurrent term, no c_prev.
    const bool zeroed =
        reset_before(a.s, len, a.time.reverse, reset_row(a.time, b), B);
    const T* g = G + (t * B + b) * 4 * H + j;
    const T* r = R + b * 4 * H + j;
    A pre[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      pre[k] = to_acc(g[k * H]) + (zeroed ? A(0) : to_acc(r[k * H]));
    const A c_prev = zeroed ? A(0) : to_acc(c[b * H + j]);
    const auto out = cell_forward<A>(pre[0], pre[1], pre[2], pre[3], c_prev);
    const T c_new = from_acc<T>(out.c), h_new = from_acc<T>(out.h);
    c[b * H + j] = c_new;
    h[b * H + j] = h_new;
    const int64_t row = t * B + b;
    if (y != nullptr) y[row * H + j] = h_new;
    if (gates != nullptr) {
      T* s = gates + row * 4 * H + j;
      s[0] = from_acc<T>(out.i);
      s[H] = from_acc<T>(out.f);
      s[2 * H] = from_acc<T>(out.g);
      s[3 * H] = from_acc<T>(out.o);
      cells[row * H + j] = c_new;
    }
  }
}

template <typename T>
__global__ void copy_rows_to_time_kernel(Dims d, TimeArgs time, int64_t s,
                                         int64_t nb, const T* h, T* y) {
  const int64_t P = d.P, n = nb * P;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       idx < n; idx += stride) {
    const int64_t b = idx / P, j = idx - b * P;
    const int64_t t = step_time(s, time.lens[b], time.reverse);
    y[(t * d.B + b) * P + j] = h[idx];
  }
}

}  // namespace

cudaError_t forward_gates(DType dt, const ForwardGateArgs& a,
                          cudaStream_t stream) {
  const int64_t n = a.nb * a.d.H;
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    forward_gates_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t copy_rows_to_time(DType dt, Dims d, TimeArgs time, int64_t s,
                              int64_t nb, const void* h, void* y,
                              cudaStream_t stream) {
  const int64_t n = nb * d.P;
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    copy_rows_to_time_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        d, time, s, nb, static_cast<const T*>(h), static_cast<T*>(y));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace rnnkernels

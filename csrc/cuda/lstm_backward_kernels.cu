// Per-step backward kernels of the cuBLAS path: the row bookkeeping the CPU
// code does with memcpy/memset, the fused gate-gradient pass, the gather of
// ragged dG rows and the window/reset cut of the carried dh.
#include "../lstm_math.h"
#include "device_types.h"

namespace rnnkernels {
namespace cuda {
namespace {

__device__ __forceinline__ const bool* reset_row(const TimeArgs& time,
                                                 int64_t b) {
  return time.reset != nullptr ? time.reset + b : nullptr;
}

// Whether gradient stops between processing steps s-1 and s for sample b.
__device__ __forceinline__ bool cut_before(const TimeArgs& time, int64_t s,
                                           int64_t len, int64_t b, int64_t B) {
  return window_cut(s, len, time.reverse, time.window) ||
         reset_before(s, len, time.reverse, reset_row(time, b), B);
}

#define RNNK_GRID_LOOP(idx, n)                                              \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x +        \
                     threadIdx.x;                                           \
       idx < (n); idx += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void step_rows_kernel(StepRowsArgs a) {
  const int64_t B = a.d.B, P = a.d.P;
  const T* gy = static_cast<const T*>(a.grad_y);
  const T* h0 = static_cast<const T*>(a.h0);
  const T* y = static_cast<const T*>(a.y);
  T* dh = static_cast<T*>(a.dh);
  T* dh_all = static_cast<T*>(a.dh_all);
  T* h_prev = static_cast<T*>(a.h_prev);
  RNNK_GRID_LOOP(idx, a.nb * P) {
    const int64_t b = idx / P, j = idx - b * P;
    const int64_t len = a.time.lens[b];
    const int64_t t = step_time(a.s, len, a.time.reverse);
    const int64_t row = t * B + b;
    T v = dh[idx];
    if (gy != nullptr) {
      v = from_acc<T>(to_acc(v) + to_acc(gy[row * P + j]));
      dh[idx] = v;
    }
    if (dh_all != nullptr) dh_all[row * P + j] = v;
    T hp = from_acc<T>(acc_t<T>(0));
    if (!reset_before(a.s, len, a.time.reverse, reset_row(a.time, b), B)) {
      hp = a.s == 0
               ? h0[idx]
               : y[(step_time(a.s - 1, len, a.time.reverse) * B + b) * P + j];
    }
    h_prev[row * P + j] = hp;
  }
}

template <typename T>
__global__ void backward_gates_kernel(BackwardGateArgs a) {
  using A = acc_t<T>;
  const int64_t B = a.d.B, H = a.d.H, P = a.d.P;
  const T* c0 = static_cast<const T*>(a.c0);
  const T* gates = static_cast<const T*>(a.gates);
  const T* cells = static_cast<const T*>(a.cells);
  const T* dh = static_cast<const T*>(a.dh);
  const T* dr = static_cast<const T*>(a.dr);
  T* dc = static_cast<T*>(a.dc);
  T* dG = static_cast<T*>(a.dG);
  T* r_all = static_cast<T*>(a.r_all);
  RNNK_GRID_LOOP(idx, a.nb * H) {
    const int64_t b = idx / H, j = idx - b * H;
    const int64_t len = a.time.lens[b];
    const int64_t t = step_time(a.s, len, a.time.reverse);
    const int64_t row = t * B + b;
    const T* g = gates + row * 4 * H + j;
    const A c = to_acc(cells[row * H + j]);
    A c_prev = 0;
    if (!reset_before(a.s, len, a.time.reverse, reset_row(a.time, b), B)) {
      c_prev = to_acc(
          a.s == 0
              ? c0[idx]
              : cells[(step_time(a.s - 1, len, a.time.reverse) * B + b) * H +
                      j]);
    }
    const A dhv = to_acc(dr != nullptr ? dr[idx] : dh[b * P + j]);
    const A o = to_acc(g[3 * H]);
    const auto r = cell_backward<A>(to_acc(g[0]), to_acc(g[H]),
                                    to_acc(g[2 * H]), o, c, c_prev, dhv,
                                    to_acc(dc[idx]));
    T* d = dG + row * 4 * H + j;
    d[0] = from_acc<T>(r.di);
    d[H] = from_acc<T>(r.df);
    d[2 * H] = from_acc<T>(r.dg);
    d[3 * H] = from_acc<T>(r.do_);
    if (r_all != nullptr) r_all[row * H + j] = from_acc<T>(o * tanh_(c));
    dc[idx] = from_acc<T>(cut_before(a.time, a.s, len, b, B) ? A(0)
                                                             : r.dc_prev);
  }
}

template <typename T>
__global__ void gather_step_rows_kernel(Dims d, TimeArgs time, int64_t s,
                                        int64_t nb, const T* dG, T* dst) {
  const int64_t W = 4 * d.H;
  RNNK_GRID_LOOP(idx, nb * W) {
    const int64_t b = idx / W, k = idx - b * W;
    const int64_t t = step_time(s, time.lens[b], time.reverse);
    dst[idx] = dG[(t * d.B + b) * W + k];
  }
}

template <typename T>
__global__ void cut_rows_kernel(Dims d, TimeArgs time, int64_t s, int64_t nb,
                                T* dh) {
  const int64_t P = d.P;
  RNNK_GRID_LOOP(idx, nb * P) {
    const int64_t b = idx / P;
    if (cut_before(time, s, time.lens[b], b, d.B))
      dh[idx] = from_acc<T>(acc_t<T>(0));
  }
}

}  // namespace

cudaError_t backward_step_rows(DType dt, const StepRowsArgs& a,
                               cudaStream_t stream) {
  const int64_t n = a.nb * a.d.P;
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    step_rows_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t backward_gates(DType dt, const BackwardGateArgs& a,
                           cudaStream_t stream) {
  const int64_t n = a.nb * a.d.H;
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    backward_gates_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t gather_step_rows(DType dt, Dims d, TimeArgs time, int64_t s,
                             int64_t nb, const void* dG, void* dst,
                             cudaStream_t stream) {
  const int64_t n = nb * 4 * d.H;
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    gather_step_rows_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        d, time, s, nb, static_cast<const T*>(dG), static_cast<T*>(dst));
    return cudaGetLastError();
  });
}

cudaError_t cut_rows(DType dt, Dims d, TimeArgs time, int64_t s, int64_t nb,
                     void* dh, cudaStream_t stream) {
  const int64_t n = nb * d.P;
  if (n <= 0) return cudaSuccess;
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    cut_rows_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        d, time, s, nb, static_cast<T*>(dh));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace rnnkernels

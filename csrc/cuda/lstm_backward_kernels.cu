// Per-step backward kernels of the cuBLAS path: the row bookkeeping the CPU
// loops do with copies, the fused gate-gradient pass, and the window/reset
// cut of the carried dh.
#include "device_common.h"

namespace rnnkernels {
namespace cuda {
namespace {

template <typename T>
__global__ void step_rows_kernel(StepRowsArgs a) {
  const Step& s = a.s;
  const int64_t P = s.P;
  const T* gy = static_cast<const T*>(a.grad_y);
  const T* h0 = static_cast<const T*>(a.h0);
  const T* y = static_cast<const T*>(a.y);
  T* dh = static_cast<T*>(a.dh);
  T* dh_all = static_cast<T*>(a.dh_all);
  T* h_prev = static_cast<T*>(a.h_prev);
  RNNK_GRID_LOOP(idx, s.nb * P) {
    const int64_t b = idx / P, j = idx - b * P;
    const int64_t row = s.row0 + b;
    T v = dh[idx];
    if (gy != nullptr) {
      v = from_acc<T>(to_acc(v) + to_acc(gy[row * a.ld_gy + j]));
      dh[idx] = v;
    }
    if (dh_all != nullptr) dh_all[row * P + j] = v;
    const StepEdge e = edge_of(s, b);
    T hp = from_acc<T>(acc_t<T>(0));
    if (!zeroed_before(s, b)) hp = e.continued ? y[(s.prev_row0 + b) * a.ldy + j] : h0[idx];
    h_prev[row * P + j] = hp;
  }
}

template <typename T>
__global__ void backward_gates_kernel(BackwardGateArgs a) {
  using A = acc_t<T>;
  const Step& s = a.s;
  const int64_t H = s.H, P = s.P;
  const A* c0 = static_cast<const A*>(a.c0);
  const T* gates = static_cast<const T*>(a.gates);
  const A* cells = static_cast<const A*>(a.cells);
  const T* dh = static_cast<const T*>(a.dh);
  const T* dr = static_cast<const T*>(a.dr);
  A* dc = static_cast<A*>(a.dc);
  T* dG = static_cast<T*>(a.dG);
  T* r_all = static_cast<T*>(a.r_all);
  RNNK_GRID_LOOP(idx, s.nb * H) {
    const int64_t b = idx / H, j = idx - b * H;
    const int64_t row = s.row0 + b;
    const T* g = gates + row * 4 * H + j;
    const A c = cells[row * H + j];
    A c_prev = 0;  // a reset step starts from zero
    if (!zeroed_before(s, b))
      c_prev = edge_of(s, b).continued ? cells[(s.prev_row0 + b) * H + j] : c0[idx];
    const A dhv = to_acc(dr != nullptr ? dr[idx] : dh[b * P + j]);
    const A o = to_acc(g[3 * H]);
    const CellBackward<A> r =
        cell_backward<A>(to_acc(g[0]), to_acc(g[H]), to_acc(g[2 * H]), o, c, c_prev, dhv, dc[idx]);
    T* d = dG + row * 4 * H + j;
    d[0] = from_acc<T>(r.di);
    d[H] = from_acc<T>(r.df);
    d[2 * H] = from_acc<T>(r.dg);
    d[3 * H] = from_acc<T>(r.do_);
    if (r_all != nullptr) r_all[row * H + j] = from_acc<T>(o * MathFns<A>::tanh(c));
    dc[idx] = cut_at(s, b) ? A(0) : r.dc_prev;
  }
}

template <typename T>
__global__ void cut_rows_kernel(Step s, T* dh) {
  RNNK_GRID_LOOP(idx, s.nb * s.P) {
    if (cut_at(s, idx / s.P)) dh[idx] = from_acc<T>(acc_t<T>(0));
  }
}

}  // namespace

cudaError_t backward_step_rows(DType dt, const StepRowsArgs& a, cudaStream_t stream) {
  return launch_for(dt, a.s.nb * a.s.P, [&](auto tag, unsigned blocks) {
    step_rows_kernel<decltype(tag)><<<blocks, kThreads, 0, stream>>>(a);
  });
}

cudaError_t backward_gates(DType dt, const BackwardGateArgs& a, cudaStream_t stream) {
  return launch_for(dt, a.s.nb * a.s.H, [&](auto tag, unsigned blocks) {
    backward_gates_kernel<decltype(tag)><<<blocks, kThreads, 0, stream>>>(a);
  });
}

cudaError_t cut_rows(DType dt, const Step& s, void* dh, cudaStream_t stream) {
  return launch_for(dt, s.nb * s.P, [&](auto tag, unsigned blocks) {
    using T = decltype(tag);
    cut_rows_kernel<T><<<blocks, kThreads, 0, stream>>>(s, static_cast<T*>(dh));
  });
}

}  // namespace cuda
}  // namespace rnnkernels

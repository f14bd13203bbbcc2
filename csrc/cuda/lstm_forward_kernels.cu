// The per-step forward kernel of the cuBLAS path: the fused gate pass.
#include "device_common.h"

namespace rnnkernels {
namespace cuda {
namespace {

template <typename T>
__global__ void forward_gates_kernel(ForwardGateArgs a) {
  using A = acc_t<T>;
  const Step& s = a.s;
  const int64_t H = s.H;
  T* G = static_cast<T*>(a.G);
  const A* R = static_cast<const A*>(a.R);
  A* c = static_cast<A*>(a.c);
  T* h = static_cast<T*>(a.h);
  T* y = static_cast<T*>(a.y);
  A* cells = static_cast<A*>(a.cells);
  RNNK_GRID_LOOP(idx, s.nb * H) {
    const int64_t b = idx / H, j = idx - b * H;
    const int64_t row = s.row0 + b;
    // A reset sample starts from zero state: no recurrent term, no c_prev.
    const bool zeroed = zeroed_before(s, b);
    T* g = G + row * 4 * H + j;
    const A* r = R + b * 4 * H + j;
    A pre[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) pre[k] = to_acc(g[k * H]) + (zeroed ? A(0) : r[k * H]);
    const A c_prev = zeroed ? A(0) : c[b * H + j];
    const CellForward<A> out = cell_forward<A>(pre[0], pre[1], pre[2], pre[3], c_prev);
    c[b * H + j] = out.c;
    const T h_new = from_acc<T>(out.h);
    h[b * H + j] = h_new;
    if (y != nullptr) y[row * a.ldy + j] = h_new;
    if (cells != nullptr) {
      // Each thread read its four pre-activations above: the gates can
      // replace them.
      g[0] = from_acc<T>(out.i);
      g[H] = from_acc<T>(out.f);
      g[2 * H] = from_acc<T>(out.g);
      g[3 * H] = from_acc<T>(out.o);
      cells[row * H + j] = out.c;
    }
  }
}

}  // namespace

cudaError_t forward_gates(DType dt, const ForwardGateArgs& a, cudaStream_t stream) {
  return launch_for(dt, a.s.nb * a.s.H, [&](auto tag, unsigned blocks) {
    forward_gates_kernel<decltype(tag)><<<blocks, kThreads, 0, stream>>>(a);
  });
}

}  // namespace cuda
}  // namespace rnnkernels

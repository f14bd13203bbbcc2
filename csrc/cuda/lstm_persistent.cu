// Persistent recurrent kernels (Diamos et al., "Persistent RNNs", 2016): one
// cooperative launch runs all T steps. Block k owns hidden units
// [k*U, k*U + U) and keeps the w_hh entries those units need in shared
// memory for the whole sequence; a grid-wide barrier separates the steps.
//
// Forward, step s: every block reads the full h_{s-1} (B x H) from a double
// buffer in global memory, multiplies it by its 4U rows of w_hh, finishes the
// gates of its units and writes its part of h_s into the other buffer.
// Backward, step s: every block turns dh, dc of its units into dG (phase A),
// then after the barrier reads the whole dG row of the step and multiplies it
// by its U columns of w_hh, which gives dh_{s-1} for exactly its own units
// (phase B). So each step needs one barrier in either direction.
#include <cooperative_groups.h>

#include "../lstm_math.h"
#include "block_matvec.h"

namespace rnnkernels {
namespace cuda {
namespace persistent {
namespace {

namespace cg = cooperative_groups;

__device__ __forceinline__ const bool* reset_row(const TimeArgs& time,
                                                 int64_t b) {
  return time.reset != nullptr ? time.reset + b : nullptr;
}

// Samples still running at step s (lengths sorted decreasing).
template <int MB>
__device__ __forceinline__ int active(const int64_t* lens, int64_t B,
                                      int64_t s) {
  int nb = 0;
  for (int b = 0; b < B; ++b) nb += lens[b] > s ? 1 : 0;
  return nb;
}

template <typename T, int MB>
__global__ void __launch_bounds__(kBlockThreads)
    forward_kernel(PersistentForwardArgs a, int U) {
  using A = acc_t<T>;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ const T* rows[MB];
  __shared__ int64_t lens[MB];

  const int64_t B = a.d.B, H = a.d.H;
  const int nout = 4 * U;
  A* out = reinterpret_cast<A*>(smem_raw);
  A* stage = out + parts_for(nout) * nout * MB;
  T* w = reinterpret_cast<T*>(stage + MB * kChunk);
  const int tid = threadIdx.x;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * U;
  const int Uv = static_cast<int>(H - j0 < U ? H - j0 : U);

  // w[(g*U + u) * H + k] = w_hh[g*H + j0 + u, k]; zero rows past H.
  const T* whh = static_cast<const T*>(a.w_hh);
  for (int64_t i = tid; i < static_cast<int64_t>(nout) * H; i += kBlockThreads) {
    const int64_t o = i / H, k = i - o * H;
    const int64_t g = o / U, u = o - g * U;
    w[i] = u < Uv ? whh[(g * H + j0 + u) * H + k] : from_acc<T>(A(0));
  }
  if (tid < MB) lens[tid] = tid < B ? a.time.lens[tid] : 0;
  __syncthreads();

  const T* G = static_cast<const T*>(a.G);
  T* hbuf = static_cast<T*>(a.hbuf);
  T* h_n = static_cast<T*>(a.h_n);
  T* c = static_cast<T*>(a.c);
  T* y = static_cast<T*>(a.y);
  T* gates = static_cast<T*>(a.gates);
  T* cells = static_cast<T*>(a.cells);
  const bool reverse = a.time.reverse;

  for (int64_t s = 0; s < a.d.T; ++s) {
    const int nb = active<MB>(lens, B, s);
    if (nb == 0) break;  // the same in every block
    const T* h_in = hbuf + (s & 1) * B * H;
    T* h_out = hbuf + ((s + 1) & 1) * B * H;
    if (tid < nb) rows[tid] = h_in + tid * H;
    block_matvec<T, MB>(nb, H, nout, rows, w, out, stage);

    for (int i = tid; i < nb * Uv; i += kBlockThreads) {
      const int b = i / Uv, u = i - b * Uv;
      const int64_t j = j0 + u, len = lens[b];
      const int64_t t = step_time(s, len, reverse);
      const bool zeroed = reset_before(s, len, reverse, reset_row(a.time, b), B);
      const int64_t row = t * B + b;
      const T* g = G + row * 4 * H + j;
      A pre[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        pre[k] = to_acc(g[k * H]);
        if (!zeroed) pre[k] += matvec_result<A, MB>(out, nout, k * U + u, b);
      }
      const A c_prev = zeroed ? A(0) : to_acc(c[b * H + j]);
      const auto r = cell_forward<A>(pre[0], pre[1], pre[2], pre[3], c_prev);
      const T c_new = from_acc<T>(r.c), h_new = from_acc<T>(r.h);
      c[b * H + j] = c_new;
      h_out[b * H + j] = h_new;
      y[row * H + j] = h_new;
      if (s == len - 1) h_n[b * H + j] = h_new;
      if (gates != nullptr) {
        T* sg = gates + row * 4 * H + j;
        sg[0] = from_acc<T>(r.i);
        sg[H] = from_acc<T>(r.f);
        sg[2 * H] = from_acc<T>(r.g);
        sg[3 * H] = from_acc<T>(r.o);
        cells[row * H + j] = c_new;
      }
    }
    grid.sync();  // h_s complete everywhere before anyone reads it
  }
}

template <typename T, int MB>
__global__ void __launch_bounds__(kBlockThreads)
    backward_kernel(PersistentBackwardArgs a, int U) {
  using A = acc_t<T>;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ const T* rows[MB];
  __shared__ int64_t lens[MB];

  const int64_t B = a.d.B, H = a.d.H, K = 4 * H;
  const int nout = U;
  A* out = reinterpret_cast<A*>(smem_raw);
  A* stage = out + parts_for(nout) * nout * MB;
  T* w = reinterpret_cast<T*>(stage + MB * kChunk);
  const int tid = threadIdx.x;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * U;
  const int Uv = static_cast<int>(H - j0 < U ? H - j0 : U);

  // w[u * 4H + q] = w_hh[q, j0 + u]: the columns that give dh of our units.
  const T* whh = static_cast<const T*>(a.w_hh);
  for (int64_t i = tid; i < static_cast<int64_t>(U) * K; i += kBlockThreads) {
    const int64_t q = i / U, u = i - q * U;
    w[u * K + q] = u < Uv ? whh[q * H + j0 + u] : from_acc<T>(A(0));
  }
  if (tid < MB) lens[tid] = tid < B ? a.time.lens[tid] : 0;
  __syncthreads();

  const T* gy = static_cast<const T*>(a.grad_y);
  const T* h0 = static_cast<const T*>(a.h0);
  const T* c0 = static_cast<const T*>(a.c0);
  const T* y = static_cast<const T*>(a.y);
  const T* gates = static_cast<const T*>(a.gates);
  const T* cells = static_cast<const T*>(a.cells);
  T* dh = static_cast<T*>(a.dh);
  T* dc = static_cast<T*>(a.dc);
  T* dG = static_cast<T*>(a.dG);
  T* h_prev = static_cast<T*>(a.h_prev);
  const TimeArgs time = a.time;

  for (int64_t s = a.d.T - 1; s >= 0; --s) {
    const int nb = active<MB>(lens, B, s);
    if (nb == 0) continue;  // the same in every block

    // Phase A: gate gradients of our units. dh and dc of a unit are only
    // ever touched by the thread that owns (b, u) in this mapping.
    for (int i = tid; i < nb * Uv; i += kBlockThreads) {
      const int b = i / Uv, u = i - b * Uv;
      const int64_t j = j0 + u, len = lens[b];
      const int64_t t = step_time(s, len, time.reverse);
      const int64_t row = t * B + b;
      const bool zeroed =
          reset_before(s, len, time.reverse, reset_row(time, b), B);
      // Round the sum like the cuBLAS path, which stores dh between kernels.
      T dhs = dh[b * H + j];
      if (gy != nullptr) dhs = from_acc<T>(to_acc(dhs) + to_acc(gy[row * H + j]));
      T hp = from_acc<T>(A(0));
      A c_prev = 0;
      if (!zeroed) {
        const int64_t prev = (step_time(s - 1, len, time.reverse) * B + b) * H + j;
        hp = s == 0 ? h0[b * H + j] : y[prev];
        c_prev = to_acc(s == 0 ? c0[b * H + j] : cells[prev]);
      }
      h_prev[row * H + j] = hp;
      const T* g = gates + row * 4 * H + j;
      const auto r = cell_backward<A>(to_acc(g[0]), to_acc(g[H]),
                                      to_acc(g[2 * H]), to_acc(g[3 * H]),
                                      to_acc(cells[row * H + j]), c_prev,
                                      to_acc(dhs), to_acc(dc[b * H + j]));
      T* d = dG + row * 4 * H + j;
      d[0] = from_acc<T>(r.di);
      d[H] = from_acc<T>(r.df);
      d[2 * H] = from_acc<T>(r.dg);
      d[3 * H] = from_acc<T>(r.do_);
      const bool cut = window_cut(s, len, time.reverse, time.window) || zeroed;
      dc[b * H + j] = from_acc<T>(cut ? A(0) : r.dc_prev);
    }
    grid.sync();  // every unit's dG of step s is written

    // Phase B: dh_{s-1} of our units = dG_s @ w_hh[:, our units].
    if (tid < nb)
      rows[tid] = dG + (step_time(s, lens[tid], time.reverse) * B + tid) * K;
    block_matvec<T, MB>(nb, K, nout, rows, w, out, stage);
    for (int i = tid; i < nb * Uv; i += kBlockThreads) {
      const int b = i / Uv, u = i - b * Uv;
      const int64_t len = lens[b];
      const bool cut =
          window_cut(s, len, time.reverse, time.window) ||
          reset_before(s, len, time.reverse, reset_row(time, b), B);
      dh[b * H + j0 + u] =
          from_acc<T>(cut ? A(0) : matvec_result<A, MB>(out, nout, u, b));
    }
    __syncthreads();
  }
}

template <typename T, int MB>
const void* kernel_for(bool backward) {
  return backward ? reinterpret_cast<const void*>(&backward_kernel<T, MB>)
                  : reinterpret_cast<const void*>(&forward_kernel<T, MB>);
}

template <typename T>
const void* kernel_for(int max_batch, bool backward) {
  switch (max_batch) {
    case 4:
      return kernel_for<T, 4>(backward);
    case 8:
      return kernel_for<T, 8>(backward);
    default:
      return kernel_for<T, 16>(backward);
  }
}

const void* kernel_for(DType dt, int max_batch, bool backward) {
  switch (dt) {
    case DType::kFloat:
      return kernel_for<float>(max_batch, backward);
    case DType::kDouble:
      return kernel_for<double>(max_batch, backward);
    case DType::kHalf:
      return kernel_for<__half>(max_batch, backward);
    case DType::kBFloat16:
      return kernel_for<__nv_bfloat16>(max_batch, backward);
  }
  return nullptr;
}

size_t element_size(DType dt) {
  return dt == DType::kDouble ? 8 : dt == DType::kFloat ? 4 : 2;
}

PersistentPlan no_fit(const char* why) {
  PersistentPlan p{};
  p.fits = false;
  p.why = why;
  return p;
}

cudaError_t launch(const void* fn, void* args, const PersistentPlan& plan,
                   cudaStream_t stream) {
  int units = plan.units;
  void* params[] = {args, &units};
  cudaError_t err = cudaFuncSetAttribute(
      fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(plan.smem));
  if (err != cudaSuccess) return err;
  err = cudaLaunchCooperativeKernel(fn, dim3(plan.blocks), dim3(kBlockThreads),
                                    params, plan.smem, stream);
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

}  // namespace
}  // namespace persistent

PersistentPlan persistent_plan(DType dt, Dims d, bool proj, bool backward) {
  using namespace persistent;
  if (proj) return no_fit("a projection (proj_size > 0) is not supported");
  if (d.B < 1 || d.T < 1 || d.H < 1) return no_fit("empty problem");
  if (d.B > kPersistentMaxBatch) return no_fit("batch is larger than 16");

  int dev = 0, sms = 0, coop = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                             dev) != cudaSuccess) {
    cudaGetLastError();
    return no_fit("device query failed");
  }
  if (!coop) return no_fit("the device has no cooperative launch");

  PersistentPlan p{};
  p.max_batch = d.B <= 4 ? 4 : d.B <= 8 ? 8 : 16;
  // One block per SM; each owns ceil(H / SMs) units.
  const int64_t units = (d.H + sms - 1) / sms;
  if (units > (1 << 20)) return no_fit("hidden size too large");
  p.units = static_cast<int>(units);
  p.blocks = static_cast<int>((d.H + units - 1) / units);
  const int nout = backward ? p.units : 4 * p.units;
  const size_t weights = 4 * static_cast<size_t>(units) * d.H * element_size(dt);
  p.smem = dt == DType::kDouble
               ? smem_bytes<double>(nout, p.max_batch, weights)
               : smem_bytes<float>(nout, p.max_batch, weights);

  const void* fn = kernel_for(dt, p.max_batch, backward);
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, fn) != cudaSuccess) {
    cudaGetLastError();
    return no_fit("kernel attribute query failed");
  }
  if (p.smem + attr.sharedSizeBytes > static_cast<size_t>(optin))
    return no_fit("the w_hh slice of one block does not fit in shared memory");
  int per_sm = 0;
  if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(p.smem)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kBlockThreads,
                                                    p.smem) != cudaSuccess) {
    cudaGetLastError();
    return no_fit("occupancy query failed");
  }
  if (static_cast<int64_t>(per_sm) * sms < p.blocks)
    return no_fit("not all blocks can be resident at once");
  p.fits = true;
  p.why = nullptr;
  return p;
}

cudaError_t persistent_forward(DType dt, const PersistentForwardArgs& a,
                               const PersistentPlan& plan,
                               cudaStream_t stream) {
  if (!plan.fits) return cudaErrorInvalidConfiguration;
  PersistentForwardArgs args = a;
  return persistent::launch(persistent::kernel_for(dt, plan.max_batch, false),
                            &args, plan, stream);
}

cudaError_t persistent_backward(DType dt, const PersistentBackwardArgs& a,
                                const PersistentPlan& plan,
                                cudaStream_t stream) {
  if (!plan.fits) return cudaErrorInvalidConfiguration;
  PersistentBackwardArgs args = a;
  return persistent::launch(persistent::kernel_for(dt, plan.max_batch, true),
                            &args, plan, stream);
}

}  // namespace cuda
}  // namespace rnnkernels

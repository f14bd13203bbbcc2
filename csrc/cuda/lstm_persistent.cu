// Persistent recurrent kernels (Diamos et al., "Persistent RNNs", 2016): one
// cooperative launch runs all T steps. Block k owns hidden units
// [k*U, k*U + U) and keeps the w_hh entries those units need in shared
// memory for the whole sequence; a grid-wide barrier separates the steps.
//
// Forward, step t: every block reads the full h of the previous step
// (B x H) from a double buffer in global memory, multiplies it by its 4U
// rows of w_hh, finishes the gates of its units and writes its part of the
// new h into the other buffer. Backward, step t: every block turns dh, dc of
// its units into dG (phase A), then after the barrier reads the whole dG
// rows of the step and multiplies them by its U columns of w_hh, which gives
// the dh carried to the previous step for exactly its own units (phase B).
// So each step needs one barrier in either direction.
//
// The samples' lengths travel in the launch's arguments: each block derives
// a step's batch size and first row from them, with no copy to the device.
#include <cooperative_groups.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "block_matvec.h"

namespace rnnkernels {
namespace cuda {
namespace persistent {
namespace {

namespace cg = cooperative_groups;

// Samples running at time t (lengths are non-increasing); 0 outside [0, T).
__device__ __forceinline__ int64_t batch_at(const int64_t* lens, int64_t B, int64_t T, int64_t t) {
  if (t < 0 || t >= T) return 0;
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) n += lens[b] > t ? 1 : 0;
  return n;
}

// Packed rows of the steps before t.
__device__ __forceinline__ int64_t rows_before(const int64_t* lens, int64_t B, int64_t t) {
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) n += lens[b] < t ? lens[b] : t;
  return n;
}

template <typename T, int MB>
__global__ void __launch_bounds__(kBlockThreads) forward_kernel(PersistentForwardArgs a, int U) {
  using A = acc_t<T>;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ const T* rows[MB];
  __shared__ int64_t lens[MB];

  const int64_t B = a.B, H = a.H;
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
  if (tid < MB) lens[tid] = tid < B ? a.lens.len[tid] : 0;
  __syncthreads();

  T* G = static_cast<T*>(a.G);
  T* hbuf = static_cast<T*>(a.hbuf);
  T* h_n = static_cast<T*>(a.h_n);
  A* c = static_cast<A*>(a.c);
  T* y = static_cast<T*>(a.y);
  A* cells = static_cast<A*>(a.cells);

  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = a.reverse ? a.T - 1 - k : k;
    const int nb = static_cast<int>(batch_at(lens, B, a.T, t));
    if (nb == 0) continue;  // the same in every block
    const int64_t row0 = rows_before(lens, B, t);
    const int64_t batch_next = batch_at(lens, B, a.T, t + 1);
    // Rows a sample has not reached yet hold h0 in both halves.
    const T* h_in = hbuf + (k & 1) * B * H;
    T* h_out = hbuf + ((k + 1) & 1) * B * H;
    if (tid < nb) rows[tid] = h_in + tid * H;
    block_matvec<T, MB>(nb, H, nout, rows, w, out, stage);

    for (int i = tid; i < nb * Uv; i += kBlockThreads) {
      const int b = i / Uv, u = i - b * Uv;
      const int64_t j = j0 + u, row = row0 + b;
      const StepEdge e = step_edge(t, b, a.reverse, batch_next);
      const bool zeroed = reset_before(e, a.reverse, a.reset, B, b);
      T* g = G + row * 4 * H + j;
      A pre[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        pre[q] = to_acc(g[q * H]);
        if (!zeroed) pre[q] += matvec_result<A, MB>(out, nout, q * U + u, b);
      }
      const A c_prev = zeroed ? A(0) : c[b * H + j];
      const CellForward<A> r = cell_forward<A>(pre[0], pre[1], pre[2], pre[3], c_prev);
      c[b * H + j] = r.c;
      const T h_new = from_acc<T>(r.h);
      h_out[b * H + j] = h_new;
      y[row * a.ldy + j] = h_new;
      if (a.reverse ? t == 0 : t == lens[b] - 1) h_n[b * H + j] = h_new;
      if (cells != nullptr) {
        g[0] = from_acc<T>(r.i);
        g[H] = from_acc<T>(r.f);
        g[2 * H] = from_acc<T>(r.g);
        g[3 * H] = from_acc<T>(r.o);
        cells[row * H + j] = r.c;
      }
    }
    grid.sync();  // the new h is complete everywhere before anyone reads it
  }
}

template <typename T, int MB>
__global__ void __launch_bounds__(kBlockThreads) backward_kernel(PersistentBackwardArgs a, int U) {
  using A = acc_t<T>;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ const T* rows[MB];
  __shared__ int64_t lens[MB];

  const int64_t B = a.B, H = a.H, K = 4 * H;
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
  if (tid < MB) lens[tid] = tid < B ? a.lens.len[tid] : 0;
  __syncthreads();

  const T* gy = static_cast<const T*>(a.grad_y);
  const T* h0 = static_cast<const T*>(a.h0);
  const A* c0 = static_cast<const A*>(a.c0);
  const T* y = static_cast<const T*>(a.y);
  const T* gates = static_cast<const T*>(a.gates);
  const A* cells = static_cast<const A*>(a.cells);
  T* dh = static_cast<T*>(a.dh);
  A* dc = static_cast<A*>(a.dc);
  T* dG = static_cast<T*>(a.dG);
  T* h_prev = static_cast<T*>(a.h_prev);

  // The reverse of the forward's order.
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = a.reverse ? k : a.T - 1 - k;
    const int nb = static_cast<int>(batch_at(lens, B, a.T, t));
    if (nb == 0) continue;  // the same in every block
    const int64_t row0 = rows_before(lens, B, t);
    const int64_t batch_next = batch_at(lens, B, a.T, t + 1);
    const int64_t prev_row0 = rows_before(lens, B, previous_time(t, a.reverse));

    // Phase A: gate gradients of our units. dh and dc of a unit are only
    // ever touched by the thread that owns (b, u) in this mapping.
    for (int i = tid; i < nb * Uv; i += kBlockThreads) {
      const int b = i / Uv, u = i - b * Uv;
      const int64_t j = j0 + u, row = row0 + b;
      const StepEdge e = step_edge(t, b, a.reverse, batch_next);
      // Rounded like the cuBLAS path, which stores dh between kernels.
      T dhs = dh[b * H + j];
      if (gy != nullptr) dhs = from_acc<T>(to_acc(dhs) + to_acc(gy[row * a.ld_gy + j]));
      T hp = from_acc<T>(A(0));
      A c_prev = 0;
      if (!reset_before(e, a.reverse, a.reset, B, b)) {
        const int64_t prev = prev_row0 + b;
        hp = e.continued ? y[prev * a.ldy + j] : h0[b * H + j];
        c_prev = e.continued ? cells[prev * H + j] : c0[b * H + j];
      }
      h_prev[row * H + j] = hp;
      const T* g = gates + row * 4 * H + j;
      const CellBackward<A> r =
          cell_backward<A>(to_acc(g[0]), to_acc(g[H]), to_acc(g[2 * H]), to_acc(g[3 * H]),
                           cells[row * H + j], c_prev, to_acc(dhs), dc[b * H + j]);
      T* d = dG + row * 4 * H + j;
      d[0] = from_acc<T>(r.di);
      d[H] = from_acc<T>(r.df);
      d[2 * H] = from_acc<T>(r.dg);
      d[3 * H] = from_acc<T>(r.do_);
      dc[b * H + j] = cut_before(e, a.reverse, a.window, a.reset, B, b) ? A(0) : r.dc_prev;
    }
    grid.sync();  // every unit's dG of this step is written

    // Phase B: dh carried to the previous step, for our units: the step's
    // dG rows (contiguous) times our columns of w_hh.
    if (tid < nb) rows[tid] = dG + (row0 + tid) * K;
    block_matvec<T, MB>(nb, K, nout, rows, w, out, stage);
    for (int i = tid; i < nb * Uv; i += kBlockThreads) {
      const int b = i / Uv, u = i - b * Uv;
      const StepEdge e = step_edge(t, b, a.reverse, batch_next);
      const bool cut = cut_before(e, a.reverse, a.window, a.reset, B, b);
      dh[b * H + j0 + u] = from_acc<T>(cut ? A(0) : matvec_result<A, MB>(out, nout, u, b));
    }
    __syncthreads();
  }
}

template <typename T, int MB>
const void* kernel_for(bool backward) {
  return backward ? reinterpret_cast<const void*>(&backward_kernel<T, MB>)
                  : reinterpret_cast<const void*>(&forward_kernel<T, MB>);
}

// The kernel instantiated for dt and the plan's batch bound, or null.
const void* kernel_for(DType dt, int max_batch, bool backward) {
  const void* fn = nullptr;
  (void)dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    fn = max_batch == 4   ? kernel_for<T, 4>(backward)
         : max_batch == 8 ? kernel_for<T, 8>(backward)
                          : kernel_for<T, 16>(backward);
    return cudaSuccess;
  });
  return fn;
}

size_t element_size(DType dt) { return dt == DType::kDouble ? 8 : dt == DType::kFloat ? 4 : 2; }

PersistentPlan no_fit(const char* why) {
  PersistentPlan p{};
  p.fits = false;
  p.why = why;
  return p;
}

// What the plan needs of a device, asked once per device.
struct DeviceFacts {
  bool ok = false;
  int sms = 0, cooperative = 0, smem_optin = 0;
};

const DeviceFacts& device_facts(int dev) {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      n = 0;
    }
    return n;
  }();
  static std::vector<std::once_flag> once(static_cast<size_t>(count));
  static std::vector<DeviceFacts> facts(static_cast<size_t>(count));
  static const DeviceFacts none;
  if (dev < 0 || dev >= count) return none;
  std::call_once(once[dev], [dev] {
    DeviceFacts& f = facts[dev];
    f.ok =
        cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&f.cooperative, cudaDevAttrCooperativeLaunch, dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&f.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) ==
            cudaSuccess;
    if (!f.ok) cudaGetLastError();
  });
  return facts[dev];
}

// A kernel's static shared memory, and its dynamic limit raised to what the
// device allows: set once per device and kernel, so that launches never
// change a kernel's attributes (two host threads could race doing so).
struct KernelFacts {
  bool ok = false;
  size_t static_smem = 0;
};

KernelFacts kernel_facts(int dev, const void* fn, const DeviceFacts& d) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, KernelFacts> known;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(dev, fn);
  auto it = known.find(key);
  if (it != known.end()) return it->second;
  KernelFacts k;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, fn) == cudaSuccess &&
      static_cast<size_t>(d.smem_optin) > attr.sharedSizeBytes &&
      cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           d.smem_optin - static_cast<int>(attr.sharedSizeBytes)) == cudaSuccess) {
    k.ok = true;
    k.static_smem = attr.sharedSizeBytes;
  } else {
    cudaGetLastError();
  }
  known.emplace(key, k);
  return k;
}

// Blocks of fn with smem bytes of dynamic shared memory that one SM of
// the current device holds at once, or -1 where the runtime cannot say:
// asked once per device, kernel and size, not every call.
int resident_blocks(int dev, const void* fn, size_t smem) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, size_t>, int> known;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(dev, fn, smem);
  auto it = known.find(key);
  if (it != known.end()) return it->second;
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kBlockThreads, smem) !=
      cudaSuccess) {
    cudaGetLastError();
    per_sm = -1;
  }
  known.emplace(key, per_sm);
  return per_sm;
}

cudaError_t launch(const void* fn, void* args, const PersistentPlan& plan, cudaStream_t stream) {
  int units = plan.units;
  void* params[] = {args, &units};
  const cudaError_t err = cudaLaunchCooperativeKernel(fn, dim3(plan.blocks), dim3(kBlockThreads),
                                                      params, plan.smem, stream);
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace
}  // namespace persistent

PersistentPlan persistent_plan(DType dt, int64_t B, int64_t H, bool proj, bool backward) {
  using namespace persistent;
  if (proj) return no_fit("a projection (proj_size > 0) is not supported");
  if (B < 1 || H < 1) return no_fit("empty problem");
  if (B > kPersistentMaxBatch) return no_fit("batch is larger than 16");

  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return no_fit("device query failed");
  }
  const DeviceFacts& d = device_facts(dev);
  if (!d.ok) return no_fit("device query failed");
  if (!d.cooperative) return no_fit("the device has no cooperative launch");

  PersistentPlan p{};
  p.max_batch = B <= 4 ? 4 : B <= 8 ? 8 : 16;
  // One block per SM; each owns ceil(H / SMs) units.
  const int64_t units = (H + d.sms - 1) / d.sms;
  if (units > (1 << 20)) return no_fit("hidden size too large");
  p.units = static_cast<int>(units);
  p.blocks = static_cast<int>((H + units - 1) / units);
  const int nout = backward ? p.units : 4 * p.units;
  const size_t weights = 4 * static_cast<size_t>(units) * H * element_size(dt);
  p.smem = dt == DType::kDouble ? smem_bytes<double>(nout, p.max_batch, weights)
                                : smem_bytes<float>(nout, p.max_batch, weights);

  const void* fn = kernel_for(dt, p.max_batch, backward);
  const KernelFacts k = kernel_facts(dev, fn, d);
  if (!k.ok) return no_fit("kernel attribute query failed");
  if (p.smem + k.static_smem > static_cast<size_t>(d.smem_optin))
    return no_fit("the w_hh slice of one block does not fit in shared memory");
  const int per_sm = resident_blocks(dev, fn, p.smem);
  if (per_sm < 0) return no_fit("occupancy query failed");
  if (static_cast<int64_t>(per_sm) * d.sms < p.blocks)
    return no_fit("not all blocks can be resident at once");
  p.fits = true;
  p.why = nullptr;
  return p;
}

cudaError_t persistent_forward(DType dt, const PersistentForwardArgs& a, const PersistentPlan& plan,
                               cudaStream_t stream) {
  if (!plan.fits) return cudaErrorInvalidConfiguration;
  PersistentForwardArgs args = a;
  return persistent::launch(persistent::kernel_for(dt, plan.max_batch, false), &args, plan, stream);
}

cudaError_t persistent_backward(DType dt, const PersistentBackwardArgs& a,
                                const PersistentPlan& plan, cudaStream_t stream) {
  if (!plan.fits) return cudaErrorInvalidConfiguration;
  PersistentBackwardArgs args = a;
  return persistent::launch(persistent::kernel_for(dt, plan.max_batch, true), &args, plan, stream);
}

}  // namespace cuda
}  // namespace rnnkernels

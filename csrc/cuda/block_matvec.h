// Block-wide small-batch matrix-vector products for the persistent kernels:
// out[o][b] = sum_k rows[b][k] * w[o][k], w resident in shared memory, rows in
// global memory written by other blocks during the same launch. nvcc only.
#pragma once

#include "device_common.h"

namespace rnnkernels {
namespace cuda {
namespace persistent {

constexpr int kBlockThreads = 256;
constexpr int kWarps = kBlockThreads / 32;
constexpr int kChunk = 256;  // columns of the rows staged per pass

// Warps that share one output when there are fewer outputs than warps; each
// takes every kParts-th group of 32 columns and the parts are summed later.
__host__ __device__ inline int parts_for(int nout) { return nout >= kWarps ? 1 : kWarps / nout; }

// Dynamic shared memory: partial sums, staged rows, then the weight slice.
template <typename A>
__host__ __device__ inline size_t smem_bytes(int nout, int max_batch, size_t weight_bytes) {
  const size_t acc = static_cast<size_t>(parts_for(nout)) * nout * max_batch +
                     static_cast<size_t>(max_batch) * kChunk;
  return acc * sizeof(A) + weight_bytes;
}

__host__ __device__ constexpr int log2_of(int n) { return n <= 1 ? 0 : 1 + log2_of(n / 2); }

// Sums N per-lane values over the 32 lanes of a warp with N-1 + (5-log2 N)
// shuffles instead of 5N: each halving step trades the half of the values
// the partner keeps. Afterwards v[0] of lane l holds the sum for index
// l >> (5 - log2 N).
template <int N, int OFF>
struct TransposeReduce {
  template <typename A>
  __device__ __forceinline__ static void run(A* v, int lane) {
    constexpr int half = N / 2;
    const bool upper = (lane & OFF) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const A send = upper ? v[i] : v[i + half];
      const A keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
    }
    TransposeReduce<half, OFF / 2>::run(v, lane);
  }
};
template <int OFF>
struct TransposeReduce<1, OFF> {
  template <typename A>
  __device__ __forceinline__ static void run(A* v, int lane) {
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], OFF);
    TransposeReduce<1, OFF / 2>::run(v, lane);
  }
};
template <>
struct TransposeReduce<1, 0> {
  template <typename A>
  __device__ __forceinline__ static void run(A*, int) {}
};

// out[(p * nout + o) * MB + b] for parts p: their sum over p is
// sum_k rows[b][k] * w[o * K + k], for b < nb (zero for nb <= b < MB).
// rows[] must be set by the caller before the call; all threads of the block
// must call it. Ends with a barrier, so out is readable afterwards.
template <typename T, int MB>
__device__ void block_matvec(int nb, int64_t K, int nout, const T* const* rows, const T* w,
                             acc_t<T>* out, acc_t<T>* stage) {
  using A = acc_t<T>;
  static_assert(MB >= 1 && MB <= 32 && (MB & (MB - 1)) == 0,
                "batch bound must be a power of two <= 32");
  constexpr int shift = 5 - log2_of(MB);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nparts = parts_for(nout), items = nout * nparts;
  for (int i = tid; i < items * MB; i += kBlockThreads) out[i] = A(0);
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int kc = static_cast<int>(K - k0 < kChunk ? K - k0 : kChunk);
    __syncthreads();  // the previous chunk is consumed; rows[] is visible
    for (int i = tid; i < MB * kChunk; i += kBlockThreads) {
      const int b = i / kChunk, kk = i - b * kChunk;
      // L2 loads: the rows were written by other SMs after this SM may have
      // cached an older copy of the same lines.
      stage[i] = (b < nb && kk < kc) ? to_acc(__ldcg(rows[b] + k0 + kk)) : A(0);
    }
    __syncthreads();
    for (int item = warp; item < items; item += kWarps) {
      const int o = item % nout, part = item / nout;
      const T* wr = w + static_cast<int64_t>(o) * K + k0;
      A acc[MB];
#pragma unroll
      for (int b = 0; b < MB; ++b) acc[b] = A(0);
      for (int kk = part * 32 + lane; kk < kc; kk += 32 * nparts) {
        const A wv = to_acc(wr[kk]);
#pragma unroll
        for (int b = 0; b < MB; ++b) acc[b] += wv * stage[b * kChunk + kk];
      }
      TransposeReduce<MB, 16>::run(acc, lane);
      // One warp owns each item, so these adds never race.
      if ((lane & ((1 << shift) - 1)) == 0) out[item * MB + (lane >> shift)] += acc[0];
    }
  }
  __syncthreads();
}

// Sum over the parts of output o for sample b.
template <typename A, int MB>
__device__ __forceinline__ A matvec_result(const A* out, int nout, int o, int b) {
  const int nparts = parts_for(nout);
  A v = out[o * MB + b];
  for (int p = 1; p < nparts; ++p) v += out[(p * nout + o) * MB + b];
  return v;
}

}  // namespace persistent
}  // namespace cuda
}  // namespace rnnkernels

// Whether this CPU can run the files compiled for AVX2 + FMA
// (gate_rows_avx2.cpp, gemm_tiles_avx2.cpp and their AVX-512 twins). They include this before their
// target pragma, so the check itself stays plain x86-64 code.
#pragma once

// __builtin_cpu_supports where there is one; no feature elsewhere.
#if defined(__x86_64__) && defined(__GNUC__)
#define RNNK_CPU_SUPPORTS(feature) __builtin_cpu_supports(feature)
#define RNNK_CPU_IS(vendor) __builtin_cpu_is(vendor)
#else
#define RNNK_CPU_SUPPORTS(feature) false
#define RNNK_CPU_IS(vendor) false
#endif

namespace rnnkernels {

inline bool cpu_has_avx2_fma() {
  static const bool ok = RNNK_CPU_SUPPORTS("avx2") && RNNK_CPU_SUPPORTS("fma");
  return ok;
}

inline bool cpu_has_avx512f() {
  static const bool ok = RNNK_CPU_SUPPORTS("avx512f");
  return ok;
}

// What ATen's AVX-512 vectors need (gate_rows_avx512.cpp).
inline bool cpu_has_avx512_rows() {
  static const bool ok = RNNK_CPU_SUPPORTS("avx512f") && RNNK_CPU_SUPPORTS("avx512bw") &&
                         RNNK_CPU_SUPPORTS("avx512vl") && RNNK_CPU_SUPPORTS("avx512dq");
  return ok;
}

// Whether vdpbf16ps (avx512_bf16) outruns float FMAs: on AMD's Zen 4 and
// later it makes twice their products a cycle; Intel's Xeons, which keep
// their bfloat16 speed for AMX, issue it at a quarter of the FMA rate: with
// its two products a lane that is half the float rate (170 against 352
// GFLOP/s on two cores of one).
inline bool cpu_bf16_dot_pays() {
  static const bool ok = RNNK_CPU_IS("amd");
  return ok;
}

}  // namespace rnnkernels

// Whether this CPU can run the files compiled for AVX2 + FMA
// (gate_rows_avx2.cpp, gemm_tiles_avx2.cpp and their AVX-512 twins). They include this before their
// target pragma, so the check itself stays plain x86-64 code.
#pragma once

// __builtin_cpu_supports where there is one; no feature elsewhere.
#if defined(__x86_64__) && defined(__GNUC__)
#define RNNK_CPU_SUPPORTS(feature) __builtin_cpu_supports(feature)
#else
#define RNNK_CPU_SUPPORTS(feature) false
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

}  // namespace rnnkernels

// Whether this CPU can run the files compiled for AVX2 + FMA
// (gate_rows_avx2.cpp, gemm_tiles_avx2.cpp and their AVX-512 twins). They include this before their
// target pragma, so the check itself stays plain x86-64 code.
#pragma once

namespace rnnkernels {

inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

inline bool cpu_has_avx512f() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

// What ATen's AVX-512 vectors need (gate_rows_avx512.cpp).
inline bool cpu_has_avx512_rows() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
#else
  return false;
#endif
}

}  // namespace rnnkernels

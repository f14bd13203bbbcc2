// The gate rows on AVX2 vectors. This file alone is compiled for AVX2 + FMA
// (the pragma below, as ATen compiles its own per-capability kernels); the
// entry points check the CPU at run time (gate_rows.cpp picks the widest).
//
// c10's headers come before the pragma, so that no inline function of theirs
// gets an out-of-line AVX2 copy the linker might keep for every caller;
// ATen's vector classes, included after it, live in a per-capability
// namespace, and everything this file instantiates is on those vectors (the
// scalar rows are gate_rows.cpp's).
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <c10/util/irange.h>

#include <cmath>

#include "cpu_features.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
// What -mavx2 -mfma would define; sleef.h and ATen key their AVX2 code on it.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RNNKERNELS_SIMD 1
// ATen's headers return vectors from functions declared before the pragma
// could matter; the ABI note does not concern this file's callers.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <ATen/cpu/vec/vec.h>

#define RNNK_ISA avx2
#define RNNK_ISA_AVAILABLE cpu_has_avx2_fma()
#define RNNK_TANH_D Sleef_finz_tanhd4_u35avx2
#include "gate_rows_isa.h"

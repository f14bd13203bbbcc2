// The gate rows on AVX-512 vectors, as gate_rows_avx2.cpp on AVX2 (see there
// for why the headers come in this order).
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <c10/util/irange.h>

#include <cmath>

#include "cpu_features.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")
// What -mavx512f ... would define; sleef.h and ATen key their code on it.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define RNNKERNELS_SIMD 1
// ATen's headers return vectors from functions declared before the pragma
// could matter; the ABI note does not concern this file's callers.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <ATen/cpu/vec/vec.h>

#define RNNK_ISA avx512
#define RNNK_ISA_AVAILABLE cpu_has_avx512_rows()
#define RNNK_TANH_D Sleef_finz_tanhd8_u35avx512f
#include "gate_rows_isa.h"

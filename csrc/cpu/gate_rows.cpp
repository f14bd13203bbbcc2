// The row entry points: AVX-512 spans, then AVX2 ones, where the CPU has
// them, scalars for the rest. Compiled without the AVX2 pragma, so the scalar code runs anywhere.
#include "gate_rows.h"

namespace rnnkernels {

template <typename T>
void forward_row(const ForwardRow<T>& w, int64_t j, int64_t j1, int64_t H) {
  if (rows_avx512()) j = forward_row_avx512(w, j, j1, H);
  if (rows_avx2()) j = forward_row_avx2(w, j, j1, H);
  forward_span<ScalarLanes<T>>(w, j, j1, H);
}

template <typename T>
void backward_row(const BackwardRow<T>& w, int64_t j, int64_t j1, int64_t H) {
  if (rows_avx512()) j = backward_row_avx512(w, j, j1, H);
  if (rows_avx2()) j = backward_row_avx2(w, j, j1, H);
  backward_span<ScalarLanes<T>>(w, j, j1, H);
}

template void forward_row(const ForwardRow<float>&, int64_t, int64_t, int64_t);
template void forward_row(const ForwardRow<double>&, int64_t, int64_t, int64_t);
template void backward_row(const BackwardRow<float>&, int64_t, int64_t, int64_t);
template void backward_row(const BackwardRow<double>&, int64_t, int64_t, int64_t);

}  // namespace rnnkernels

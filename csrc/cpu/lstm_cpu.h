// The CPU time loops of one layer's directions (see lstm_stack.h).
#pragma once

#include "../lstm_stack.h"

namespace rnnkernels {

void forward_layer_cpu(at::ArrayRef<LayerForward> dirs);
void backward_layer_cpu(at::ArrayRef<LayerBackward> dirs);

// The forward loop with its products the other way round
// (lstm_forward_unit_major.cpp), where that is faster; false where it does
// not run, leaving the call to the loop on packed weights.
template <typename T>
bool forward_unit_major(const LayerForward& f);

}  // namespace rnnkernels

// The CPU time loops of one layer-direction (see lstm_stack.h).
#pragma once

#include "../lstm_stack.h"

namespace rnnkernels {

void forward_layer_cpu(const LayerForward& f);
void backward_layer_cpu(const LayerBackward& b);

}  // namespace rnnkernels

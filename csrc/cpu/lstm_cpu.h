// The CPU time loops of one layer's directions (see lstm_stack.h).
#pragma once

#include "../lstm_stack.h"

namespace rnnkernels {

void forward_layer_cpu(at::ArrayRef<LayerForward> dirs);
void backward_layer_cpu(at::ArrayRef<LayerBackward> dirs);

}  // namespace rnnkernels

// The arguments of the fused LSTM ops, written once: the schema text the ops
// are defined with, the struct every kernel reads them through, and the
// checks every backend runs before it touches memory.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/stack.h>

#include <optional>
#include <vector>

#include "thread_scope.h"

namespace rnnkernels {

// The arguments every op of the family shares, in schema order. input is
// (T, B, I), or packed rows (N, I) with batch_sizes (T,) on the CPU; params
// are nn.LSTM's flat weights (w_ih, w_hh[, b_ih, b_hh][, w_hr] per layer and
// direction); hx, cx may be None (zeros); reset is (T, B) bool.
#define RNNK_LSTM_ARGS                                                    \
  "Tensor input, Tensor? hx, Tensor? cx, Tensor[] params, "               \
  "Tensor? batch_sizes, Tensor? reset, bool has_biases, int num_layers, " \
  "bool bidirectional, float dropout, bool train, int window"

inline constexpr const char* kLstmSchema =
    "lstm(" RNNK_LSTM_ARGS ") -> (Tensor output, Tensor hy, Tensor cy)";
inline constexpr const char* kLstmForwardSchema =
    "lstm_forward(" RNNK_LSTM_ARGS
    ", bool need_backward) -> (Tensor output, Tensor hy, Tensor cy, Tensor[] saved)";
inline constexpr const char* kLstmBackwardSchema =
    "lstm_backward(Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, " RNNK_LSTM_ARGS
    ", Tensor output, Tensor[] saved, bool need_input_grad, bool need_weight_grad) -> "
    "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor[] grad_params)";

struct LstmArgs {
  at::Tensor input;
  std::optional<at::Tensor> hx, cx;
  std::vector<at::Tensor> params;
  std::optional<at::Tensor> batch_sizes, reset;
  bool has_biases = true;
  int64_t num_layers = 1;
  bool bidirectional = false;
  double dropout = 0;
  bool train = false;
  int64_t window = 0;

  static constexpr size_t kCount = 12;  // stack slots, in RNNK_LSTM_ARGS order
  static LstmArgs read(const torch::jit::Stack& stack, size_t first);
  void push(torch::jit::Stack& stack) const;

  // Dropout between layers runs: training, p > 0, more than one layer.
  bool dropout_active() const { return train && dropout > 0 && num_layers > 1; }
};

// Stack slots of lstm_forward's arguments (the shared ones, need_backward)
// and of lstm_backward's (three gradients, the shared ones, output, saved,
// need_input_grad, need_weight_grad), in schema order.
inline constexpr size_t kForwardSlots = LstmArgs::kCount + 1;
inline constexpr size_t kBackwardSlots = 3 + LstmArgs::kCount + 4;

// Sizes the arguments imply, once they are checked.
struct StackDims {
  int64_t T = 0, B = 0;   // steps and batch (the largest batch when packed)
  int64_t rows = 0;       // rows of input and output: T * B, or the packed N
  int64_t I = 0;          // input features of layer 0
  int64_t H = 0;          // cell size
  int64_t P = 0;          // size of h: proj_size, or H without a projection
  int64_t L = 1, D = 1;   // layers, directions
  int64_t per_group = 0;  // params per layer-direction
  bool proj = false, packed = false;

  int64_t groups() const { return L * D; }
  int64_t layer_input(int64_t layer) const { return layer == 0 ? I : D * P; }
};

// Checks shapes, dtypes, devices and sizes of the shared arguments.
StackDims check_args(const LstmArgs& a);

// While one is alive on a thread, a bfloat16 call runs in float32 but keeps
// its input and weight matrices as they are, for the kernels to round
// nothing twice: check_args takes them in bfloat16 beside float32 states
// and biases, and the stack's buffers are float32 (kernel_type).
using BFloat16Weights = ThreadScope<struct BFloat16WeightsTag>;

// The dtype a call's kernels, buffers and states run in: float32 for a
// bfloat16 input under BFloat16Weights, else the input's.
inline at::ScalarType kernel_type(const at::Tensor& input) {
  return input.scalar_type() == at::kBFloat16 && BFloat16Weights::raised() ? at::kFloat
                                                                           : input.scalar_type();
}

// One layer-direction's weights; undefined where the stack has none.
struct GroupWeights {
  at::Tensor w_ih, w_hh, b_ih, b_hh, w_hr;
};
GroupWeights group_weights(const LstmArgs& a, const StackDims& d, int64_t layer, int64_t dir);

// The type the cell state, its gradient and every accumulation run in:
// float32 for the half types, the input's type otherwise.
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}

// What a forward that saves for backward returns in `saved`, per layer: the
// activated gates of each direction (rows, 4H), the cell states (D, rows, H,
// in acc_type), and below the last layer its output (rows, D*P) and, with
// dropout, the mask applied to it (the same shape, 0 or 1/(1-p)).
struct SavedLayer {
  std::vector<at::Tensor> gates;
  at::Tensor cells, out, mask;
};
// Checks what lstm_backward receives on top of the shared arguments and
// returns the saved tensors by layer.
std::vector<SavedLayer> check_backward_args(const LstmArgs& a, const StackDims& d,
                                            const std::optional<at::Tensor>& grad_output,
                                            const std::optional<at::Tensor>& grad_hy,
                                            const std::optional<at::Tensor>& grad_cy,
                                            const at::Tensor& output,
                                            const std::vector<at::Tensor>& saved);

// The packed rows of the time loops: the samples running at time t are
// 0 .. batch(t)-1 (sorted by length), at rows offset(t) .. offset(t+1)-1.
// Unpacked input is the case where every step has all B samples.
class StepRows {
 public:
  StepRows(const LstmArgs& a, const StackDims& d);
  int64_t T() const { return T_; }
  int64_t B() const { return B_; }
  // Batch size of time t; 0 outside [0, T).
  int64_t batch(int64_t t) const { return t < 0 || t >= T_ ? 0 : packed_ ? batch_[t] : B_; }
  int64_t offset(int64_t t) const { return packed_ ? offset_[t] : t * B_; }
  // Steps sample b runs.
  int64_t length(int64_t b) const;

 private:
  int64_t T_, B_;
  bool packed_;
  std::vector<int64_t> batch_, offset_;  // per step, only when packed
};

}  // namespace rnnkernels

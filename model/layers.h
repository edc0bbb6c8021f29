#pragma once
// The layers of the network, each with an explicit forward and backward (there is no autograd).
//
// Conventions shared by every layer:
// - forward(x, ..., keep): when `keep` is true the layer keeps what its backward needs (its input,
//   its output or saved statistics); inference passes keep = false and holds nothing.
// - backward(dy, need_dx): accumulates weight gradients into Param::grad for trainable parameters
//   only, returns dx when need_dx (an undefined tensor otherwise), and releases what forward kept,
//   so a second backward without a forward is an error, never a silent reuse of stale activations.
// - Layouts (DESIGN.md): activations NHWC, conv weights OHWI; files use PyTorch's OIHW and are
//   permuted at load/save only (model/resnet18.cpp).
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "runtime/tensor.h"

namespace ae::model {

// Parameter groups: the unit of freezing. `bn_affine` is every BatchNorm gamma/beta of the
// backbone; the BatchNorm1d layers inside the seed head belong to `head`.
enum class ParamGroup { backbone, bn_affine, adapters, head };
const char* group_name(ParamGroup g);

struct Param {
  Tensor value;     // internal layout (OHWI for conv weights)
  Tensor grad;      // undefined until a backward computes it; ResNet18::zero_grad() resets it
  ParamGroup group = ParamGroup::backbone;
  bool trainable = true;

  // grad = g the first time after zero_grad, grad += g afterwards (gradient accumulation).
  void accumulate(const Tensor& g);
};

// One named entry of a model's state (PyTorch's state_dict): exactly one of param, buffer,
// counter is set.
struct StateEntry {
  std::string name;
  Param* param = nullptr;
  Tensor* buffer = nullptr;     // f32 buffer (BatchNorm running statistics)
  int64_t* counter = nullptr;   // BatchNorm num_batches_tracked (i64 scalar in files)
  bool conv_weight = false;     // OHWI in memory, OIHW in files

  // Sets the entry from a tensor as files hold it (PyTorch layout, any device; the caller has
  // checked name, shape and dtype). A parameter's gradient is dropped.
  void load_from_file(const Tensor& t) const;
};

// The weight a convolution of x uses: w itself, or for a bf16 x (a stored activation) w cast to
// bf16 (ops::conv2d_forward takes one dtype for both; in bf16 conv math the kernels round the f32
// weight to these same bits). Cast per call: an optimiser steps the f32 master weight in place.
Tensor operand_weight(const Tensor& w, const Tensor& x);

// OIHW <-> OHWI permutes (CPU tensors; used at load/save and for comparing gradients with PyTorch).
Tensor oihw_to_ohwi(const Tensor& w);
Tensor ohwi_to_oihw(const Tensor& w);

class Conv2d {
 public:
  Conv2d() = default;
  Conv2d(int64_t in_channels, int64_t out_channels, int kernel, int stride, int pad, ParamGroup group);
  // x f32 or bf16 (a stored activation: the weight is then cast to bf16 for the call, see
  // operand_weight). The output is f32.
  Tensor forward(const Tensor& x, bool keep);
  // Inference: this convolution (with `w` in place of the weight when given: an adapter folded into
  // it) followed by bn's eval BatchNorm, + residual when defined, then ReLU when relu, in one op
  // (ops::conv2d_batchnorm: the bits of forward + the BatchNorm layer's eval output), stored as
  // y_dtype (f32 or bf16). Keeps nothing, like forward(x, false).
  Tensor forward_batchnorm(const Tensor& x, const class BatchNorm& bn, const Tensor& residual, bool relu,
                           const Tensor* w = nullptr, DType y_dtype = DType::f32);
  // Training: this convolution followed by bn's training-mode BatchNorm, + residual when defined,
  // then ReLU when relu, in one op (ops::conv2d_batchnorm_train), stored as y_dtype. Both layers
  // keep what their backward needs, as forward(x, keep) and bn.forward(.., true, keep) would; the
  // returned tensor is what a following ReLU layer's backward needs (ReLU::adopt_output).
  Tensor forward_batchnorm_train(const Tensor& x, class BatchNorm& bn, const Tensor& residual, bool relu, bool keep,
                                 DType y_dtype = DType::f32);
  Tensor backward(const Tensor& dy, bool need_dx);
  void list_state(const std::string& prefix, std::vector<StateEntry>& out);

  Param weight;  // [out, k, k, in]
  ops::Conv2dParams params;

 private:
  Tensor x_;  // kept only when the weight is trainable
  Shape x_shape_;
  bool kept_ = false;
};

// BatchNorm2d (NHWC) and BatchNorm1d ([N,C]) are the same layer: channels are the last dimension.
class BatchNorm {
 public:
  BatchNorm() = default;
  BatchNorm(int64_t channels, ParamGroup affine_group);
  // training: batch statistics, running statistics updated, num_batches_tracked incremented.
  Tensor forward(const Tensor& x, bool training, bool keep);
  Tensor backward(const Tensor& dy, bool need_dx);
  // The backward of relu(this layer's output [+ residual]) and this layer at once: `relu_y` is that
  // ReLU's output and `dy` its gradient (ops::batchnorm_backward_train's relu_y: the masked
  // gradient is never written). The same bits as backward(relu_backward(relu_y, dy)); an undefined
  // relu_y is backward(dy).
  Tensor backward_through_relu(const Tensor& dy, const Tensor& relu_y, bool need_dx);
  void list_state(const std::string& prefix, std::vector<StateEntry>& out);
  // A training forward computed elsewhere (Conv2d::forward_batchnorm_train): x was this layer's
  // input, save_mean/save_invstd its batch statistics, and the running statistics are updated.
  void adopt_training_forward(const Tensor& x, const Tensor& save_mean, const Tensor& save_invstd, bool keep);

  Param weight, bias;  // gamma, beta [C]
  Tensor running_mean, running_var;
  int64_t num_batches_tracked = 0;
  ops::BatchNormParams params;

 private:
  Tensor x_, save_mean_, save_invstd_;
  bool kept_training_ = false;
};

class Linear {
 public:
  Linear() = default;
  Linear(int64_t in_features, int64_t out_features, ParamGroup group);
  Tensor forward(const Tensor& x, bool keep);
  Tensor backward(const Tensor& dy, bool need_dx);
  void list_state(const std::string& prefix, std::vector<StateEntry>& out);

  Param weight;  // [out, in]
  Param bias;    // [out]

 private:
  Tensor x_;
};

// PReLU with one shared slope (nn.PReLU() default, init 0.25).
class PReLU {
 public:
  PReLU() = default;
  explicit PReLU(ParamGroup group);
  Tensor forward(const Tensor& x, bool keep);
  Tensor backward(const Tensor& dy, bool need_dx);
  void list_state(const std::string& prefix, std::vector<StateEntry>& out);

  Param weight;  // [1]

 private:
  Tensor x_;
};

// Inverted dropout. The random stream is (seed, offset): the caller derives both from the
// model's seed and step counter so that runs are reproducible. `device_offset`, when defined, is
// added to `offset` on the device (ops::DropoutParams::device_offset).
class Dropout {
 public:
  Dropout() = default;
  explicit Dropout(float p);
  Tensor forward(const Tensor& x, bool training, uint64_t seed, uint64_t offset, bool keep,
                 const Tensor& device_offset = Tensor());
  Tensor backward(const Tensor& dy, bool need_dx);

  float p = 0.5f;

 private:
  ops::DropoutParams used_;
  Tensor mask_;
  bool identity_ = true;   // eval mode or p == 0: the forward was the identity
  bool kept_ = false;
};

class ReLU {
 public:
  Tensor forward(const Tensor& x, bool keep);
  Tensor backward(const Tensor& dy, bool need_dx);
  // y = relu(x) was computed by a fused op (Conv2d::forward_batchnorm_train): keep it as forward would.
  void adopt_output(const Tensor& y, bool keep);
  // The kept output, handed over instead of running backward (BatchNorm::backward_through_relu
  // applies the ReLU's backward itself); nothing is kept afterwards.
  Tensor take_output();

 private:
  Tensor y_;
};

class MaxPool2d {
 public:
  MaxPool2d() = default;
  explicit MaxPool2d(const ops::MaxPool2dParams& p) : params(p) {}
  Tensor forward(const Tensor& x, bool keep);
  Tensor backward(const Tensor& dy, bool need_dx);

  ops::MaxPool2dParams params;

 private:
  Tensor argmax_;
  Shape x_shape_;
};

// Global average pooling NHWC [N,H,W,C] -> [N,C] (AdaptiveAvgPool2d((1,1)) followed by flatten).
class GlobalAvgPool {
 public:
  Tensor forward(const Tensor& x, bool keep);
  Tensor backward(const Tensor& dy, bool need_dx);

 private:
  Shape x_shape_;
};

}  // namespace ae::model

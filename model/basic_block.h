#pragma once
// torchvision's BasicBlock with optional parallel residual adapters (Rebuffi et al. 2018):
//   a   = conv1(x) [+ adapter1(x)]      adapter1: 1x1, same stride as conv1, no bias
//   out = relu(bn1(a))
//   c   = conv2(out) [+ adapter2(out)]  adapter2: 1x1, stride 1, no bias
//   y   = relu(bn2(c) + identity),      identity = downsample(x) (1x1 conv + BN) or x
// The block composes its own backward from its layers' backwards.
// Inference (eval mode, nothing kept for a backward) runs the fused epilogues of kernels/ops.h:
// bn1+ReLU and bn2+residual+ReLU each in one pass (ops::batchnorm_apply), the same float
// operations as the unfused layers, so the output is unchanged (tests/unit/test_fused_epilogue.cpp).
#include <string>
#include <vector>

#include "model/layers.h"

namespace ae::model {

class BasicBlock {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int stride, bool adapters);

  Tensor forward(const Tensor& x, bool training, bool keep);
  // need_dx = false only for the earliest block that still has trainable parameters when no
  // input gradient is wanted.
  Tensor backward(const Tensor& dy, bool need_dx);
  // Appends the state entries under `prefix` ("layer2.0.") in torchvision's order.
  void list_state(const std::string& prefix, std::vector<StateEntry>& out);

  bool has_downsample() const { return has_downsample_; }
  bool has_adapters() const { return has_adapters_; }

  // Off: inference runs the unfused layer-by-layer path (kept for comparing the two).
  bool fuse_inference_epilogues = true;

  Conv2d conv1, conv2, adapter1, adapter2, down_conv;
  BatchNorm bn1, bn2, down_bn;
  ReLU relu1;

 private:
  Tensor forward_inference_fused(const Tensor& x);

  bool has_downsample_ = false;
  bool has_adapters_ = false;
  Tensor y_;  // the block output, for the final ReLU's backward
};

}  // namespace ae::model

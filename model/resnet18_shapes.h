#pragma once
// The distinct convolution shapes of torchvision's ResNet-18 at a 224x224 input (20 convolutions
// in all), shared by the CPU and GPU convolution benchmarks and the cuDNN oracle test.
#include <cstdint>

#include "kernels/conv_geometry.h"

namespace ae::model {

struct ConvShape {
  const char* name;  // no spaces: it is a field of benchmark result lines
  int64_t hw, c, o;  // input side, input channels, output channels
  int k, stride, pad;
  int count;         // how many of ResNet-18's convolutions have this shape

  ops::Conv2dParams params() const { return ops::Conv2dParams{k, k, stride, stride, pad, pad}; }
  // The layer at batch n; side overrides the input side (224x224 network input: hw).
  ConvGeometry geometry(int64_t n, int64_t side = 0) const {
    const int64_t s = side > 0 ? side : hw;
    return ConvGeometry(params(), Shape{n, s, s, c}, o);
  }
};

inline constexpr ConvShape kResNet18ConvShapes[] = {
    {"conv1", 224, 3, 64, 7, 2, 3, 1},
    {"layer1.3x3", 56, 64, 64, 3, 1, 1, 4},
    {"layer2.0.3x3/2", 56, 64, 128, 3, 2, 1, 1},
    {"layer2.3x3", 28, 128, 128, 3, 1, 1, 3},
    {"layer2.0.down", 56, 64, 128, 1, 2, 0, 1},
    {"layer3.0.3x3/2", 28, 128, 256, 3, 2, 1, 1},
    {"layer3.3x3", 14, 256, 256, 3, 1, 1, 3},
    {"layer3.0.down", 28, 128, 256, 1, 2, 0, 1},
    {"layer4.0.3x3/2", 14, 256, 512, 3, 2, 1, 1},
    {"layer4.3x3", 7, 512, 512, 3, 1, 1, 3},
    {"layer4.0.down", 14, 256, 512, 1, 2, 0, 1},
};

}  // namespace ae::model

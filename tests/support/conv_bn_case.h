#pragma once
// A convolution followed by a BatchNorm, with random inputs: the cases the conv2d_batchnorm and
// conv2d_batchnorm_train tests of both backends share (tests/unit/test_fused_epilogue.cpp,
// tests/gpu/test_cuda_fused.cpp): the C = 3 stem's 7x7/2, a 3x3, and a 1x1/2 downsample.
#include <cstdint>

#include "kernels/ops.h"
#include "tests/support/check.h"

namespace ae::test {

struct ConvBnCase {
  Shape x;
  int64_t o;
  ops::Conv2dParams p;
  Shape y_shape() const { return {x[0], p.out_h(x[1]), p.out_w(x[2]), o}; }
};
inline constexpr int kConvBnCaseCount = 3;
inline const ConvBnCase kConvBnCases[kConvBnCaseCount] = {{{2, 9, 9, 3}, 8, {7, 7, 2, 2, 3, 3}},
                                                          {{2, 6, 5, 8}, 12, {3, 3, 1, 1, 1, 1}},
                                                          {{3, 6, 5, 8}, 5, {1, 1, 2, 2, 0, 0}}};

// Host tensors: x, w [O,KH,KW,C], a residual of the output's shape, and the BatchNorm's gamma,
// beta, mean and variance (positive), from seeds seed, seed+1, ... seed+6.
struct ConvBnInputs {
  Tensor x, w, residual, gamma, beta, mean, var;
};
inline ConvBnInputs random_conv_bn_inputs(const ConvBnCase& k, uint64_t seed) {
  ConvBnInputs in;
  in.x = random_tensor(k.x, seed);
  in.w = random_tensor({k.o, k.p.kernel_h, k.p.kernel_w, k.x[3]}, seed + 1);
  in.residual = random_tensor(k.y_shape(), seed + 2);
  in.gamma = random_tensor({k.o}, seed + 3, 0.5f, 1.5f);
  in.beta = random_tensor({k.o}, seed + 4);
  in.mean = random_tensor({k.o}, seed + 5);
  in.var = random_tensor({k.o}, seed + 6, 0.1f, 2.0f);
  return in;
}

}  // namespace ae::test

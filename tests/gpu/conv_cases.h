#pragma once
// The awkward convolution sweep shared by the CUDA conv backward and tensor-core tests:
// odd sizes, 1x1, kernels 1/3/7, strides 1/2, padding 0..3, channel counts 1..65.
// {1,8,8,...,k3,s2,p0} has input pixels that no output reads (their dx must still be written as
// zero); {2,17,17,...} is large enough for backward-weight to split its reduction into slices.
#include <cmath>
#include <cstdint>

#include "kernels/cuda/conv_math.h"
#include "kernels/ops.h"

namespace ae::gputest {

struct ConvCase {
  int64_t n, h, w, c, o;
  int k, stride, pad;
};

inline constexpr ConvCase kConvSweep[] = {
    {1, 1, 1, 1, 1, 1, 1, 0},  {2, 5, 7, 3, 7, 3, 1, 1},   {1, 13, 17, 5, 65, 3, 2, 1}, {2, 9, 9, 3, 4, 7, 2, 3},
    {1, 6, 6, 17, 9, 1, 2, 0}, {1, 7, 5, 1, 3, 3, 1, 0},   {2, 4, 4, 64, 5, 1, 1, 0},   {1, 15, 15, 3, 16, 7, 2, 3},
    {1, 3, 3, 4, 5, 3, 1, 2},  {1, 8, 8, 3, 4, 3, 2, 0},   {2, 7, 5, 64, 64, 3, 1, 1},  {2, 17, 17, 5, 3, 3, 1, 1},
    {1, 1, 1, 3, 5, 3, 1, 1},  {2, 13, 17, 1, 1, 7, 1, 3},
};

// The tensor-core arithmetics the tests sweep, with the unit roundoff of their operand type.
struct Precision {
  cuda::ConvMath math;
  const char* name;
  double u;
};
inline const Precision kPrecisions[] = {{cuda::ConvMath::tf32, "tf32", std::ldexp(1.0, -11)},
                                        {cuda::ConvMath::bf16, "bf16", std::ldexp(1.0, -8)}};

inline ops::Conv2dParams params_of(const ConvCase& c) {
  ops::Conv2dParams p;
  p.kernel_h = p.kernel_w = c.k;
  p.stride_h = p.stride_w = c.stride;
  p.pad_h = p.pad_w = c.pad;
  return p;
}

}  // namespace ae::gputest

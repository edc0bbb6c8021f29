#pragma once
// The geometry of one convolution (groups = 1, dilation 1), defined once for every backend, the
// benchmarks and the ResNet-18 shape table: input [N,H,W,C], weight [O,KH,KW,C], stride, padding and
// the output [N,OH,OW,O] from PyTorch's floor formula (ops::conv_out_size, kernels/ops.h). Compiles
// as host and device code (kernels/cuda/*.cu with nvcc, and with g++ for the emulated device).
#include <cstdint>

#include "kernels/ops.h"

#if defined(__CUDACC__)
#define AE_CONV_GEOMETRY_HD __host__ __device__ __forceinline__
#else
#define AE_CONV_GEOMETRY_HD inline
#endif

namespace ae {

struct ConvGeometry {
  int64_t n = 0, h = 0, w = 0, c = 0;      // input  [N,H,W,C]
  int64_t o = 0, kh = 0, kw = 0;           // weight [O,KH,KW,C]
  int64_t sh = 1, sw = 1, ph = 0, pw = 0;  // stride, padding
  int64_t oh = 0, ow = 0;                  // output [N,OH,OW,O]

  ConvGeometry() = default;
  ConvGeometry(const ops::Conv2dParams& p, const Shape& x_shape, int64_t out_channels)
      : n(x_shape[0]), h(x_shape[1]), w(x_shape[2]), c(x_shape[3]),
        o(out_channels), kh(p.kernel_h), kw(p.kernel_w),
        sh(p.stride_h), sw(p.stride_w), ph(p.pad_h), pw(p.pad_w),
        oh(p.out_h(x_shape[1])), ow(p.out_w(x_shape[2])) {}

  AE_CONV_GEOMETRY_HD int64_t k() const { return kh * kw * c; }   // GEMM inner size of the forward
  AE_CONV_GEOMETRY_HD int64_t m() const { return n * oh * ow; }   // output pixels in the batch
  AE_CONV_GEOMETRY_HD int64_t lines() const { return n * oh; }    // output rows in the batch
  // 1x1, stride 1, no padding: the forward's column matrix is x itself, viewed as [N*H*W, C].
  AE_CONV_GEOMETRY_HD bool is_pointwise_identity() const {
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  }
  Shape x_shape() const { return {n, h, w, c}; }
  Shape w_shape() const { return {o, kh, kw, c}; }
  Shape y_shape() const { return {n, oh, ow, o}; }
};

}  // namespace ae

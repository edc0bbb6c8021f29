// CPU image ops: ImageNet normalisation and PyTorch's bilinear resize (align_corners=False) on
// NHWC f32, with their backwards. The float operations are train/preprocess.cpp's, in the same
// order, so the forward results equal it bit for bit (tests/unit/test_image_ops.cpp checks).
// Arguments arrive validated and reshaped to [N,H,W,C] by kernels/image.cpp.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"
#include "kernels/resize_taps.h"

namespace ae::cpu {
namespace {

// Weight of input position i in output tap t (both taps count when they are the same pixel).
float weight_of(const ops::BilinearTap& t, int32_t i) {
  return (t.i0 == i ? t.w0 : 0.0f) + (t.i1 == i ? t.w1 : 0.0f);
}

}  // namespace

Tensor normalize_image(const ops::NormalizeImageParams& p, const Tensor& x) {
  Tensor y = Tensor::empty(x.shape());
  const int64_t c = x.dim(-1), n = x.numel();
  float* yp = y.f32();
  if (x.dtype() == DType::u8) {
    const uint8_t* xp = x.data<uint8_t>();
    // static_cast<float>(v) / 255.0f is to_float's conversion (train/image.cpp), kept exactly.
    parallel_elements(n, [&](int64_t i) {
      const int64_t j = i % c;
      yp[i] = (static_cast<float>(xp[i]) / 255.0f - p.mean[j]) / p.std[j];
    });
  } else {
    const float* xp = x.f32();
    parallel_elements(n, [&](int64_t i) {
      const int64_t j = i % c;
      yp[i] = (xp[i] - p.mean[j]) / p.std[j];
    });
  }
  return y;
}

Tensor normalize_image_backward(const ops::NormalizeImageParams& p, const Tensor& dy) {
  Tensor dx = Tensor::empty(dy.shape());
  const int64_t c = dy.dim(-1);
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
  parallel_elements(dy.numel(), [&](int64_t i) { dxp[i] = dyp[i] / p.std[i % c]; });
  return dx;
}

Tensor resize_bilinear_forward(const ops::ResizeBilinearParams& p, const Tensor& x) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  if (p.out_h == h && p.out_w == w) return x.clone();  // identity, bit-exact (as preprocess.cpp)
  const ops::BilinearAxis ay = ops::bilinear_axis(h, p.out_h), ax = ops::bilinear_axis(w, p.out_w);
  Tensor y = Tensor::empty({n, p.out_h, p.out_w, c});
  const float* xp = x.f32();
  float* yp = y.f32();
  // One output row per task: out = sum_y wy * (sum_x wx * in), starting from 0 as preprocess.cpp.
  parallel_rows(n * p.out_h, min_rows_for(p.out_w * c * 4), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.out_h, oy = row % p.out_h;
      const ops::BilinearTap ty = ay.taps[static_cast<std::size_t>(oy)];
      const float* r0 = xp + ((b * h + ty.i0) * w) * c;
      const float* r1 = xp + ((b * h + ty.i1) * w) * c;
      float* out = yp + row * p.out_w * c;
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const ops::BilinearTap tx = ax.taps[static_cast<std::size_t>(ox)];
        for (int64_t j = 0; j < c; ++j) {
          float along0 = 0.0f, along1 = 0.0f, acc = 0.0f;
          along0 += tx.w0 * r0[tx.i0 * c + j];
          along0 += tx.w1 * r0[tx.i1 * c + j];
          along1 += tx.w0 * r1[tx.i0 * c + j];
          along1 += tx.w1 * r1[tx.i1 * c + j];
          acc += ty.w0 * along0;
          acc += ty.w1 * along1;
          out[ox * c + j] = acc;
        }
      }
    }
  });
  return y;
}

Tensor resize_bilinear_backward(const ops::ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape) {
  const int64_t n = x_shape[0], h = x_shape[1], w = x_shape[2], c = x_shape[3];
  if (p.out_h == h && p.out_w == w) return dy.clone();
  const ops::BilinearAxis ay = ops::bilinear_axis(h, p.out_h), ax = ops::bilinear_axis(w, p.out_w);
  Tensor dx = Tensor::empty(x_shape);
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
  // A gather: input pixel (iy, ix) sums wy * (sum over its reading columns of wx * dy) over the
  // output rows that read it. The CUDA kernel sums in this same order.
  parallel_rows(n * h, min_rows_for(w * c * 8), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / h;
      const int32_t iy = static_cast<int32_t>(row % h);
      const ops::TapReaders ry = ay.readers[static_cast<std::size_t>(iy)];
      for (int32_t ix = 0; ix < static_cast<int32_t>(w); ++ix) {
        const ops::TapReaders rx = ax.readers[static_cast<std::size_t>(ix)];
        for (int64_t j = 0; j < c; ++j) {
          float acc = 0.0f;
          for (int32_t oy = ry.first; oy < ry.last; ++oy) {
            const float wy = weight_of(ay.taps[static_cast<std::size_t>(oy)], iy);
            const float* dyr = dyp + ((b * p.out_h + oy) * p.out_w) * c + j;
            float along = 0.0f;
            for (int32_t ox = rx.first; ox < rx.last; ++ox) {
              along += weight_of(ax.taps[static_cast<std::size_t>(ox)], ix) * dyr[ox * c];
            }
            acc += wy * along;
          }
          dxp[(row * w + ix) * c + j] = acc;
        }
      }
    }
  });
  return dx;
}

}  // namespace ae::cpu

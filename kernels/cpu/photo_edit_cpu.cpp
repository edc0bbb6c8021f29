// CPU photo edits (ops::photo_edit_forward / photo_edit_backward_theta; the model is in kernels/ops.h,
// the per-pixel code in kernels/photo_edit_pixel.h, shared with the CUDA backend). Pixels are split
// across the runtime's thread pool; the backward's sum over pixels goes through reduce_rows
// (kernels/cpu/channel_reduce.h): fixed blocks of pixels summed in double, blocks added in order, so
// dtheta is the same bits for any thread count. Arguments arrive validated by kernels/photo_edit.cpp.
#include <vector>

#include "kernels/cpu/channel_reduce.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"
#include "kernels/photo_edit_pixel.h"

namespace ae::cpu {
namespace {

// One pixel of x as floats in [0,1] (u8: v / 255.0f, normalize_image's conversion).
struct PixelReader {
  const float* f32 = nullptr;
  const uint8_t* u8 = nullptr;
  explicit PixelReader(const Tensor& x) {
    if (x.dtype() == DType::u8) {
      u8 = x.data<uint8_t>();
    } else {
      f32 = x.f32();
    }
  }
  void operator()(int64_t pixel, float rgb[3]) const {
    for (int ch = 0; ch < 3; ++ch) {
      rgb[ch] = u8 ? static_cast<float>(u8[pixel * 3 + ch]) / 255.0f : f32[pixel * 3 + ch];
    }
  }
};

// Per-pixel cost in "elements" for the thread split: a few dozen float operations per pixel.
constexpr int64_t kPixelCost = 16;

}  // namespace

Tensor photo_edit_forward(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta) {
  const ops::PhotoEditCoefficients c = ops::photo_edit_coefficients(p.tone_knots, theta.f32());
  Tensor y = Tensor::empty(x.shape());
  const PixelReader read(x);
  float* yp = y.f32();
  parallel_elements(
      x.numel() / 3,
      [&](int64_t i) {
        float rgb[3];
        read(i, rgb);
        ops::photo_edit_pixel(c, rgb, yp + i * 3);
      },
      kPixelCost);
  return y;
}

Tensor photo_edit_backward_theta(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta,
                                 const Tensor& dy) {
  const ops::PhotoEditCoefficients c = ops::photo_edit_coefficients(p.tone_knots, theta.f32());
  const int64_t params = p.theta_size();
  const PixelReader read(x);
  const float* dyp = dy.f32();
  std::vector<double> sums(static_cast<std::size_t>(params));
  reduce_rows<1>(
      x.numel() / 3, params,
      [&](int64_t i, double* acc) {
        float rgb[3];
        read(i, rgb);
        ops::photo_edit_accumulate(c, rgb, dyp + i * 3, acc, 1);
      },
      sums.data());
  Tensor dtheta = Tensor::empty({params});
  for (int64_t q = 0; q < params; ++q) {
    dtheta.f32()[q] = static_cast<float>(sums[static_cast<std::size_t>(q)] * c.grad_scale[q]);
  }
  return dtheta;
}

}  // namespace ae::cpu

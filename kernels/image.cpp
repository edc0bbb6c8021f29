// Validation and dispatch for the image ops of kernels/ops.h (normalize_image, resize_bilinear).
#include <cmath>

#include "kernels/backend.h"
#include "kernels/resize_taps.h"

namespace ae::ops {
namespace {

// The bound train/preprocess.cpp checks too: a typo must not allocate gigabytes.
constexpr int64_t kMaxSide = kMaxResizeSide;

// [H,W,C] or [N,H,W,C] with C in 1..kMaxChannels.
void check_image_shape(const char* op, const char* arg, const Shape& s) {
  AE_CHECK(s.size() == 3 || s.size() == 4,
           op << ": " << arg << " has shape " << shape_str(s) << "; expected [H,W,C] or [N,H,W,C] (channels last)");
  const int64_t c = s.back();
  AE_CHECK(c >= 1 && c <= NormalizeImageParams::kMaxChannels,
           op << ": " << arg << " has shape " << shape_str(s) << " with " << c << " channels; expected 1.."
              << NormalizeImageParams::kMaxChannels);
}

void check_normalize_params(const char* op, const NormalizeImageParams& p, int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) {
    AE_CHECK(std::isfinite(p.mean[c]) && std::isfinite(p.std[c]) && p.std[c] != 0.0f,
             op << ": channel " << c << " has mean " << p.mean[c] << " and std " << p.std[c]
                << "; both must be finite and std non-zero");
  }
}

Shape as_batch(const Shape& s) { return s.size() == 4 ? s : Shape{1, s[0], s[1], s[2]}; }

void check_resize(const char* op, const ResizeBilinearParams& p, const Shape& x_shape) {
  AE_CHECK(x_shape.size() == 4, op << ": x has shape " << shape_str(x_shape) << "; expected NHWC [N,H,W,C]");
  AE_CHECK(x_shape[1] >= 1 && x_shape[2] >= 1 && x_shape[1] <= kMaxSide && x_shape[2] <= kMaxSide,
           op << ": x has shape " << shape_str(x_shape) << "; its height and width must be in 1.." << kMaxSide);
  AE_CHECK(p.out_h >= 1 && p.out_w >= 1 && p.out_h <= kMaxSide && p.out_w <= kMaxSide,
           op << ": output size " << p.out_h << "x" << p.out_w << " must be in 1.." << kMaxSide);
}

}  // namespace

Tensor normalize_image(const NormalizeImageParams& p, const Tensor& x) {
  const char* op = "normalize_image";
  AE_CHECK(x.defined(), op << ": x is undefined");
  AE_CHECK(x.dtype() == DType::u8 || x.dtype() == DType::f32, op << ": x " << x.desc() << " must be u8 or f32");
  check_image_shape(op, "x", x.shape());
  check_normalize_params(op, p, x.dim(-1));
  const Backend& be = backend_for(op, {&x});
  return be.normalize_image(p, x.reshape(as_batch(x.shape())));
}

Tensor normalize_image_backward(const NormalizeImageParams& p, const Tensor& dy, const Shape& x_shape) {
  const char* op = "normalize_image_backward";
  check_image_shape(op, "x_shape", x_shape);
  check_normalize_params(op, p, x_shape.back());
  check_f32(op, "dy", dy);
  AE_CHECK(dy.shape() == as_batch(x_shape), op << ": dy " << dy.desc() << " does not match the output shape "
                                               << shape_str(as_batch(x_shape)) << " of an input " << shape_str(x_shape));
  const Backend& be = backend_for(op, {&dy});
  return be.normalize_image_backward(p, dy).reshape(x_shape);
}

Tensor resize_bilinear_forward(const ResizeBilinearParams& p, const Tensor& x) {
  const char* op = "resize_bilinear_forward";
  check_f32(op, "x", x);
  check_resize(op, p, x.shape());
  const Backend& be = backend_for(op, {&x});
  return be.resize_bilinear_forward(p, x);
}

Tensor resize_bilinear_backward(const ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape) {
  const char* op = "resize_bilinear_backward";
  check_f32(op, "dy", dy);
  check_resize(op, p, x_shape);
  const Shape y_shape{x_shape[0], p.out_h, p.out_w, x_shape[3]};
  check_shape(op, "dy", dy, y_shape);
  const Backend& be = backend_for(op, {&dy});
  return be.resize_bilinear_backward(p, dy, x_shape);
}

}  // namespace ae::ops

// Validation and dispatch for the photo-edit ops of kernels/ops.h (photo_edit_forward,
// photo_edit_backward_theta). theta's values are not inspected here (that would read a device tensor
// back to the host on every call): a non-finite theta gives non-finite outputs.
#include "kernels/backend.h"

namespace ae::ops {
namespace {

void check_edit_args(const char* op, const PhotoEditParams& p, const Tensor& x, const Tensor& theta) {
  AE_CHECK(p.tone_knots >= 0 && p.tone_knots <= PhotoEditParams::kMaxToneKnots,
           op << ": tone_knots is " << p.tone_knots << "; it must be in 0.." << PhotoEditParams::kMaxToneKnots);
  AE_CHECK(x.defined(), op << ": x is undefined");
  AE_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::u8,
           op << ": x " << x.desc() << " must be f32 (RGB in [0,1]) or u8");
  AE_CHECK((x.ndim() == 3 || x.ndim() == 4) && x.dim(-1) == 3,
           op << ": x " << x.desc() << " must be an RGB image [N,H,W,3] or [H,W,3] (channels last)");
  check_f32(op, "theta", theta);
  AE_CHECK(theta.ndim() == 1 && theta.numel() == p.theta_size(),
           op << ": theta " << theta.desc() << " must be [" << p.theta_size() << "]: " << kPhotoEditFixed
              << " fixed parameters (exposure, contrast, saturation, temperature, tint) + tone_knots = "
              << p.tone_knots);
}

}  // namespace

Tensor photo_edit_forward(const PhotoEditParams& p, const Tensor& x, const Tensor& theta) {
  const char* op = "photo_edit_forward";
  check_edit_args(op, p, x, theta);
  const Backend& be = backend_for(op, {&x, &theta});
  return be.photo_edit_forward(p, x, theta);
}

Tensor photo_edit_backward_theta(const PhotoEditParams& p, const Tensor& x, const Tensor& theta, const Tensor& dy) {
  const char* op = "photo_edit_backward_theta";
  check_edit_args(op, p, x, theta);
  check_f32(op, "dy", dy);
  check_shape(op, "dy", dy, x.shape());
  const Backend& be = backend_for(op, {&x, &theta, &dy});
  return be.photo_edit_backward_theta(p, x, theta, dy);
}

}  // namespace ae::ops

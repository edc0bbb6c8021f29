// Validation and dispatch for the conv ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w) {
  const Backend& be = backend_for("conv2d_forward", {&x, &w});
  return be.conv2d_forward(p, x, w);
}

Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape) {
  const Backend& be = backend_for("conv2d_backward_data", {&dy, &w});
  return be.conv2d_backward_data(p, dy, w, x_shape);
}

Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape) {
  const Backend& be = backend_for("conv2d_backward_weight", {&x, &dy});
  return be.conv2d_backward_weight(p, x, dy, w_shape);
}

}  // namespace ae::ops

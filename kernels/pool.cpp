// Validation and dispatch for the pool ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x) {
  const Backend& be = backend_for("maxpool2d_forward", {&x});
  return be.maxpool2d_forward(p, x);
}

Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape) {
  const Backend& be = backend_for("maxpool2d_backward", {&dy, &argmax});
  return be.maxpool2d_backward(p, dy, argmax, x_shape);
}

Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x) {
  const Backend& be = backend_for("adaptive_avgpool2d_forward", {&x});
  return be.adaptive_avgpool2d_forward(p, x);
}

Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape) {
  const Backend& be = backend_for("adaptive_avgpool2d_backward", {&dy});
  return be.adaptive_avgpool2d_backward(p, dy, x_shape);
}

}  // namespace ae::ops

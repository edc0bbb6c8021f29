// Validation and dispatch for the activation ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

Tensor relu_forward(const Tensor& x) {
  const Backend& be = backend_for("relu_forward", {&x});
  return be.relu_forward(x);
}

Tensor relu_backward(const Tensor& y, const Tensor& dy) {
  const Backend& be = backend_for("relu_backward", {&y, &dy});
  return be.relu_backward(y, dy);
}

Tensor prelu_forward(const Tensor& x, const Tensor& slope) {
  const Backend& be = backend_for("prelu_forward", {&x, &slope});
  return be.prelu_forward(x, slope);
}

PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy) {
  const Backend& be = backend_for("prelu_backward", {&x, &slope, &dy});
  return be.prelu_backward(x, slope, dy);
}

DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x) {
  const Backend& be = backend_for("dropout_forward", {&x});
  return be.dropout_forward(p, x);
}

Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy) {
  const Backend& be = backend_for("dropout_backward", {&mask, &dy});
  return be.dropout_backward(p, mask, dy);
}

}  // namespace ae::ops

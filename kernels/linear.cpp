// Validation and dispatch for the linear ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const Backend& be = backend_for("linear_forward", {&x, &w, &bias});
  return be.linear_forward(x, w, bias);
}

LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx) {
  const Backend& be = backend_for("linear_backward", {&x, &w, &dy});
  return be.linear_backward(x, w, dy, has_bias, need_dx);
}

}  // namespace ae::ops

// Validation and dispatch for the elementwise ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

Tensor add(const Tensor& a, const Tensor& b) {
  const Backend& be = backend_for("add", {&a, &b});
  return be.add(a, b);
}

Tensor scale(const Tensor& a, float s) {
  const Backend& be = backend_for("scale", {&a});
  return be.scale(a, s);
}

void add_inplace(Tensor& a, const Tensor& b, float s) {
  const Backend& be = backend_for("add_inplace", {&a, &b});
  return be.add_inplace(a, b, s);
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  const Backend& be = backend_for("add_relu", {&a, &b});
  return be.add_relu(a, b);
}

}  // namespace ae::ops

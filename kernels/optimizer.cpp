// Validation and dispatch for the optimizer ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) {
  const Backend& be = backend_for("sgd_step", {&param, &grad, &momentum_buf});
  return be.sgd_step(p, param, grad, momentum_buf, step);
}

void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) {
  const Backend& be = backend_for("adam_step", {&param, &grad, &m, &v});
  return be.adam_step(p, param, grad, m, v, step);
}

}  // namespace ae::ops

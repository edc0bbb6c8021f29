// Validation and dispatch for the batchnorm ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var) {
  const Backend& be = backend_for("batchnorm_forward_train", {&x, &gamma, &beta, &running_mean, &running_var});
  return be.batchnorm_forward_train(p, x, gamma, beta, running_mean, running_var);
}

Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var) {
  const Backend& be = backend_for("batchnorm_forward_eval", {&x, &gamma, &beta, &running_mean, &running_var});
  return be.batchnorm_forward_eval(p, x, gamma, beta, running_mean, running_var);
}

BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd) {
  const Backend& be = backend_for("batchnorm_backward_train", {&x, &dy, &gamma, &save_mean, &save_invstd});
  return be.batchnorm_backward_train(x, dy, gamma, save_mean, save_invstd);
}

BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var) {
  const Backend& be = backend_for("batchnorm_backward_eval", {&x, &dy, &gamma, &running_mean, &running_var});
  return be.batchnorm_backward_eval(p, x, dy, gamma, running_mean, running_var);
}

}  // namespace ae::ops

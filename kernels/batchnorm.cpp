// Validation and dispatch for the batchnorm ops of kernels/ops.h.
// x is [..., C] with at least two dimensions; every per-channel tensor (gamma, beta, running
// and saved statistics) is f32 [C] with C = the last dimension of x.
#include <cmath>

#include "kernels/backend.h"
#include "kernels/batchnorm_sync.h"
#include "kernels/op_checks.h"

namespace ae::ops {
namespace {

// x must be f32 with >= 2 dims; returns C.
int64_t check_input(const char* op, const Tensor& x) {
  check_f32(op, "x", x);
  AE_CHECK(x.ndim() >= 2, op << ": x " << x.desc()
                             << " must have at least 2 dimensions ([N,C] or NHWC [N,H,W,C]; channels last)");
  return x.dim(-1);
}

void check_channel_vector(const char* op, const char* arg, const Tensor& t, const Shape& x_shape) {
  const int64_t c = x_shape.back();
  AE_CHECK(t.defined(), op << ": " << arg << " is undefined, expected [" << c << "] f32 (C = last dim of x "
                           << shape_str(x_shape) << ")");
  AE_CHECK(t.dtype() == DType::f32 && t.shape() == Shape{c},
           op << ": " << arg << " is " << t.desc() << ", expected [" << c << "] f32 (C = last dim of x "
              << shape_str(x_shape) << ")");
}

void check_same_shape(const char* op, const char* arg, const Tensor& t, const Tensor& x) {
  check_f32(op, arg, t);
  AE_CHECK(t.shape() == x.shape(),
           op << ": " << arg << " has shape " << shape_str(t.shape()) << ", expected x's shape " << shape_str(x.shape()));
}

void check_params(const char* op, const BatchNormParams& p) {
  AE_CHECK(std::isfinite(p.eps) && p.eps >= 0.0f, op << ": eps = " << p.eps << " must be finite and >= 0");
  AE_CHECK(std::isfinite(p.momentum), op << ": momentum = " << p.momentum << " must be finite");
}

}  // namespace

void check_batchnorm_train_args(const char* op, const BatchNormParams& p, const Shape& x_shape, const Tensor& gamma,
                                const Tensor& beta, const Tensor& running_mean, const Tensor& running_var) {
  check_params(op, p);
  const int64_t c = x_shape.back();
  check_channel_vector(op, "gamma", gamma, x_shape);
  check_channel_vector(op, "beta", beta, x_shape);
  check_channel_vector(op, "running_mean", running_mean, x_shape);
  check_channel_vector(op, "running_var", running_var, x_shape);
  int64_t m = 1;
  for (std::size_t i = 0; i + 1 < x_shape.size(); ++i) m *= x_shape[i];
  if (c == 0) m = 0;
  // PyTorch refuses this too: the unbiased running variance divides by M-1. With a reducer
  // installed (synchronised BatchNorm, kernels/batchnorm_sync.h: honoured by the CPU and CUDA
  // backends) M is the whole batch's, checked by the backend once the ranks' counts are summed.
  AE_CHECK(m >= 2 || (batchnorm_sync_reducer() != nullptr && m >= 1),
           op << ": x " << shape_str(x_shape) << " has " << m << " value(s) per channel; training-mode batch norm"
              << " needs at least 2 (the unbiased running variance divides by M-1, M = numel/C)");
}

BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var) {
  const char* op = "batchnorm_forward_train";
  check_input(op, x);
  check_batchnorm_train_args(op, p, x.shape(), gamma, beta, running_mean, running_var);
  const Backend& be = backend_for(op, {&x, &gamma, &beta, &running_mean, &running_var});
  return be.batchnorm_forward_train(p, x, gamma, beta, running_mean, running_var);
}

Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var) {
  const char* op = "batchnorm_forward_eval";
  check_params(op, p);
  check_input(op, x);
  check_channel_vector(op, "gamma", gamma, x.shape());
  check_channel_vector(op, "beta", beta, x.shape());
  check_channel_vector(op, "running_mean", running_mean, x.shape());
  check_channel_vector(op, "running_var", running_var, x.shape());
  const Backend& be = backend_for(op, {&x, &gamma, &beta, &running_mean, &running_var});
  return be.batchnorm_forward_eval(p, x, gamma, beta, running_mean, running_var);
}

BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                                        const Tensor& save_invstd, const Tensor& relu_y) {
  const char* op = "batchnorm_backward_train";
  check_input(op, x);
  check_same_shape(op, "dy", dy, x);
  check_channel_vector(op, "gamma", gamma, x.shape());
  check_channel_vector(op, "save_mean", save_mean, x.shape());
  check_channel_vector(op, "save_invstd", save_invstd, x.shape());
  if (relu_y.defined()) {
    AE_CHECK(relu_y.shape() == x.shape(), op << ": relu_y has shape " << shape_str(relu_y.shape())
                                             << ", expected x's shape " << shape_str(x.shape()));
    check_f32_or_bf16(op, "relu_y", relu_y);
  }
  const Backend& be = relu_y.defined() ? backend_for(op, {&x, &dy, &gamma, &save_mean, &save_invstd, &relu_y})
                                       : backend_for(op, {&x, &dy, &gamma, &save_mean, &save_invstd});
  return be.batchnorm_backward_train(x, dy, gamma, save_mean, save_invstd, relu_y);
}

BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var) {
  const char* op = "batchnorm_backward_eval";
  check_params(op, p);
  check_input(op, x);
  check_same_shape(op, "dy", dy, x);
  check_channel_vector(op, "gamma", gamma, x.shape());
  check_channel_vector(op, "running_mean", running_mean, x.shape());
  check_channel_vector(op, "running_var", running_var, x.shape());
  const Backend& be = backend_for(op, {&x, &dy, &gamma, &running_mean, &running_var});
  return be.batchnorm_backward_eval(p, x, dy, gamma, running_mean, running_var);
}

}  // namespace ae::ops

// Validation and dispatch for the fused epilogue ops of kernels/ops.h.
#include <cmath>

#include "kernels/backend.h"
#include "kernels/op_checks.h"

namespace ae::ops {

void check_batchnorm_apply_args(const char* op, const BatchNormApplyParams& p, const Shape& x_shape,
                                 const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                 const Tensor& var_or_invstd, const Tensor& residual) {
  AE_CHECK(std::isfinite(p.eps) && p.eps >= 0.0f, op << ": eps = " << p.eps << " must be finite and >= 0");
  const int64_t c = x_shape.back();
  const char* stats_name = p.stats == BatchNormStats::running ? "running_var" : "save_invstd";
  for (const auto& [arg, t] : {std::pair<const char*, const Tensor*>{"gamma", &gamma}, {"beta", &beta},
                               {"mean", &mean}, {stats_name, &var_or_invstd}}) {
    check_f32(op, arg, *t);
    AE_CHECK(t->shape() == Shape{c}, op << ": " << arg << " is " << t->desc() << ", expected [" << c
                                        << "] f32 (C = the channels of " << shape_str(x_shape) << ")");
  }
  if (residual.defined()) {
    check_f32_or_bf16(op, "residual", residual);
    AE_CHECK(residual.shape() == x_shape, op << ": residual has shape " << shape_str(residual.shape())
                                             << ", expected " << shape_str(x_shape) << " (the normalised tensor's)");
  }
  AE_CHECK(p.out_dtype == DType::f32 || p.out_dtype == DType::bf16,
           op << ": out_dtype " << dtype_name(p.out_dtype) << ": y can be f32 or bf16");
}

Tensor batchnorm_apply(const BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) {
  const char* op = "batchnorm_apply";
  check_f32(op, "x", x);
  AE_CHECK(x.ndim() >= 2, op << ": x " << x.desc() << " must have at least 2 dimensions (channels last)");
  check_batchnorm_apply_args(op, p, x.shape(), gamma, beta, mean, var_or_invstd, residual);
  const Backend& be = backend_for(op, {&x, &gamma, &beta, &mean, &var_or_invstd, &residual});
  return be.batchnorm_apply(p, x, gamma, beta, mean, var_or_invstd, residual);
}

}  // namespace ae::ops

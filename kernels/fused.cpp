// Validation and dispatch for the fused epilogue ops of kernels/ops.h.
#include <cmath>

#include "kernels/backend.h"

namespace ae::ops {

Tensor batchnorm_apply(const BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) {
  const char* op = "batchnorm_apply";
  AE_CHECK(std::isfinite(p.eps) && p.eps >= 0.0f, op << ": eps = " << p.eps << " must be finite and >= 0");
  check_f32(op, "x", x);
  AE_CHECK(x.ndim() >= 2, op << ": x " << x.desc() << " must have at least 2 dimensions (channels last)");
  const int64_t c = x.dim(-1);
  const char* stats_name = p.stats == BatchNormStats::running ? "running_var" : "save_invstd";
  for (const auto& [arg, t] : {std::pair<const char*, const Tensor*>{"gamma", &gamma}, {"beta", &beta},
                               {"mean", &mean}, {stats_name, &var_or_invstd}}) {
    check_f32(op, arg, *t);
    AE_CHECK(t->shape() == Shape{c}, op << ": " << arg << " is " << t->desc() << ", expected [" << c
                                        << "] f32 (C = last dim of x " << shape_str(x.shape()) << ")");
  }
  if (residual.defined()) {
    check_f32(op, "residual", residual);
    AE_CHECK(residual.shape() == x.shape(), op << ": residual has shape " << shape_str(residual.shape())
                                               << ", expected x's shape " << shape_str(x.shape()));
  }
  const Backend& be = backend_for(op, {&x, &gamma, &beta, &mean, &var_or_invstd, &residual});
  return be.batchnorm_apply(p, x, gamma, beta, mean, var_or_invstd, residual);
}

}  // namespace ae::ops

#pragma once
// Argument checks shared by the validation files of more than one op family (conv.cpp's
// conv2d_batchnorm and conv2d_batchnorm_train check their BatchNorm arguments as fused.cpp's
// batchnorm_apply and batchnorm.cpp's batchnorm_forward_train do).
#include "kernels/ops.h"

namespace ae::ops {

// The BatchNorm arguments of batchnorm_apply against the shape of the x it normalises (channels
// last): eps, the four [C] f32 vectors, and the residual's shape. Throws ae::Error naming `op`.
void check_batchnorm_apply_args(const char* op, const BatchNormApplyParams& p, const Shape& x_shape,
                                const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                const Tensor& var_or_invstd, const Tensor& residual);

// The BatchNorm arguments of batchnorm_forward_train against the shape of the x it normalises:
// eps and momentum, the four [C] f32 vectors, and at least 2 values per channel (1 with a
// synchronised-BatchNorm reducer installed). Throws ae::Error naming `op`.
void check_batchnorm_train_args(const char* op, const BatchNormParams& p, const Shape& x_shape, const Tensor& gamma,
                                const Tensor& beta, const Tensor& running_mean, const Tensor& running_var);

}  // namespace ae::ops

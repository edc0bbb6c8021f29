#pragma once
// Argument checks shared by the validation files of more than one op family (conv.cpp's
// conv2d_batchnorm checks its BatchNorm arguments as fused.cpp's batchnorm_apply does).
#include "kernels/ops.h"

namespace ae::ops {

// The BatchNorm arguments of batchnorm_apply against the shape of the x it normalises (channels
// last): eps, the four [C] f32 vectors, and the residual's shape. Throws ae::Error naming `op`.
void check_batchnorm_apply_args(const char* op, const BatchNormApplyParams& p, const Shape& x_shape,
                                const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                const Tensor& var_or_invstd, const Tensor& residual);

}  // namespace ae::ops

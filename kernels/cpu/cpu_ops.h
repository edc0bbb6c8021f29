#pragma once
// The CPU backend: readable C++ with OpenMP and OpenBLAS. It is the reference the CUDA kernels
// are tested against and a real backend for users without a GPU. Arguments arrive validated
// (kernels/<family>.cpp checks shapes, dtypes and devices before dispatching).
#include "kernels/op_list.h"
#include "kernels/ops.h"

namespace ae::cpu {

using ops::AdamParams;
using ops::AdaptiveAvgPool2dParams;
using ops::BatchNormGrads;
using ops::BatchNormParams;
using ops::BatchNormTrainOut;
using ops::Conv2dParams;
using ops::DropoutOut;
using ops::DropoutParams;
using ops::LinearGrads;
using ops::MaxPool2dParams;
using ops::MaxPoolOut;
using ops::PReluGrads;
using ops::SgdParams;

// One function per op of the op list (kernels/op_list.h), defined in kernels/cpu/<family>_cpu.cpp.
AE_BACKEND_OPS(AE_OP_DECLARE_FUNCTION)

// conv2d_forward then batchnorm_apply, the BatchNorm applied as outputs are stored where the path
// allows (ops::conv2d_batchnorm; conv_cpu.cpp).
Tensor conv2d_batchnorm(const Conv2dParams& conv, const ops::BatchNormApplyParams& bn, const Tensor& x, const Tensor& w,
                        const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd,
                        const Tensor& residual);

}  // namespace ae::cpu

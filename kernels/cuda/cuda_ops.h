#pragma once
// The CUDA backend's op implementations (kernels/cuda/*.cu), one function per op of
// kernels/ops.h with the same meaning. Arguments arrive validated by kernels/<family>.cpp; each
// function returns outputs on the inputs' device. cuda_backend.cu maps ops::Backend onto these.
#include "kernels/op_list.h"
#include "kernels/ops.h"

namespace ae::cuda {

using ops::AdamParams;
using ops::BatchNormGrads;
using ops::BatchNormParams;
using ops::BatchNormTrainOut;
using ops::DropoutOut;
using ops::DropoutParams;
using ops::LinearGrads;
using ops::MaxPoolOut;
using ops::PReluGrads;
using ops::SgdParams;

// One function per op of the op lists (kernels/op_list.h: every backend's ops and the CUDA-only
// capturable steps), defined in kernels/cuda/<family>.cu (conv: conv*.cu; the capturable steps:
// optimizer.cu and loss.cu).
AE_BACKEND_OPS(AE_OP_DECLARE_FUNCTION)
AE_CUDA_ONLY_OPS(AE_OP_DECLARE_FUNCTION)

// fused.cu:
// The convolution with its output's statistics gathered in its epilogue, then batchnorm_apply
// (conv_stats.h). Without a synchronised-BatchNorm reducer installed: the backend composes the
// ops when one is (the reducer needs the global mean before the squared deviations).
ops::ConvBatchNormTrainOut conv2d_batchnorm_train(const ops::Conv2dParams& conv, const ops::BatchNormParams& bn,
                                                  bool relu, const Tensor& x, const Tensor& w, const Tensor& gamma,
                                                  const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                                  const Tensor& residual, DType y_dtype);

}  // namespace ae::cuda

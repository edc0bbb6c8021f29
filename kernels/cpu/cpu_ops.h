#pragma once
// The CPU backend: readable C++ with OpenMP and OpenBLAS. It is the reference the CUDA kernels
// are tested against and a real backend for users without a GPU. Arguments arrive validated
// (kernels/<family>.cpp checks shapes, dtypes and devices before dispatching).
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

Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w);
// conv2d_forward then batchnorm_apply, the BatchNorm applied as outputs are stored where the path
// allows (ops::conv2d_batchnorm).
Tensor conv2d_batchnorm(const Conv2dParams& conv, const ops::BatchNormApplyParams& bn, const Tensor& x, const Tensor& w,
                        const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd,
                        const Tensor& residual);
Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape);
Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape);
BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var);
Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var);
BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd);
BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var);
Tensor relu_forward(const Tensor& x);
Tensor relu_backward(const Tensor& y, const Tensor& dy);
Tensor prelu_forward(const Tensor& x, const Tensor& slope);
PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy);
DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x);
Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy);
Tensor add(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, float s);
void add_inplace(Tensor& a, const Tensor& b, float s);
Tensor add_relu(const Tensor& a, const Tensor& b);
MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x);
Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape);
Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x);
Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape);
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias);
LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx);
Tensor mse_loss_forward(const Tensor& pred, const Tensor& target);
Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss);
void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step);
void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step);
void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>& momentum_bufs, int64_t step);
void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step);
// image_cpu.cpp (x and dy [N,H,W,C])
Tensor normalize_image(const ops::NormalizeImageParams& p, const Tensor& x);
Tensor normalize_image_backward(const ops::NormalizeImageParams& p, const Tensor& dy);
Tensor resize_bilinear_forward(const ops::ResizeBilinearParams& p, const Tensor& x);
Tensor resize_bilinear_backward(const ops::ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape);
// photo_edit_cpu.cpp (x [...,3] f32 or u8; dtheta summed in fixed blocks, in double)
Tensor photo_edit_forward(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta);
Tensor photo_edit_backward_theta(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta, const Tensor& dy);
// fused_cpu.cpp
Tensor batchnorm_apply(const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual);

}  // namespace ae::cpu

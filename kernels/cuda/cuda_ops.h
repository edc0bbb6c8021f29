#pragma once
// The CUDA backend's op implementations (kernels/cuda/*.cu), one function per op of
// kernels/ops.h with the same meaning. Arguments arrive validated by kernels/<family>.cpp; each
// function returns outputs on the inputs' device. cuda_backend.cu maps ops::Backend onto these.
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

// conv.cu
Tensor conv2d_forward(const ops::Conv2dParams& p, const Tensor& x, const Tensor& w);
// conv_backward.cu
Tensor conv2d_backward_data(const ops::Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape);
Tensor conv2d_backward_weight(const ops::Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape);

// batchnorm.cu (channels = last dimension; statistics and reductions deterministic)
BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, Tensor& running_mean, Tensor& running_var);
Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var);
BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                        const Tensor& save_mean, const Tensor& save_invstd);
BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy,
                                       const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var);

// elementwise.cu
Tensor add(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, float s);
void add_inplace(Tensor& a, const Tensor& b, float s);
Tensor add_relu(const Tensor& a, const Tensor& b);

// activation.cu
Tensor relu_forward(const Tensor& x);
Tensor relu_backward(const Tensor& y, const Tensor& dy);
DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x);
Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy);

// prelu.cu (slope [1] shared or [C] per channel; dslope deterministic)
Tensor prelu_forward(const Tensor& x, const Tensor& slope);
PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy);

// pool.cu (backward passes gather over input positions: no atomics)
MaxPoolOut maxpool2d_forward(const ops::MaxPool2dParams& p, const Tensor& x);
Tensor maxpool2d_backward(const ops::MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape);
Tensor adaptive_avgpool2d_forward(const ops::AdaptiveAvgPool2dParams& p, const Tensor& x);
Tensor adaptive_avgpool2d_backward(const ops::AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape);

// linear.cu
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias);
LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx);

// loss.cu
Tensor mse_loss_forward(const Tensor& pred, const Tensor& target);
Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss);

// optimizer.cu
void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step);
void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step);
void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>& momentum_bufs, int64_t step);
void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step);
// Capturable multi-tensor steps (kernels/graph.h): the coefficients of step `step` as CPU bytes, to
// upload into a device buffer the *_device steps read; `skip` (i64 [1], nonfinite_flag) set leaves
// every tensor unchanged. Same kernels and bits as the by-value steps above.
Tensor sgd_coefficient_bytes(const SgdParams& p, int64_t step);
Tensor adam_coefficient_bytes(const AdamParams& p, int64_t step);
void sgd_step_multi_device(const SgdParams& p, const std::vector<Tensor*>& params,
                           const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs,
                           const Tensor& coefficients, const Tensor& skip);
void adam_step_multi_device(const AdamParams& p, const std::vector<Tensor*>& params,
                            const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
                            const std::vector<Tensor*>& v, const Tensor& coefficients, const Tensor& skip);
// i64 [1] on the loss's device: 1 when the f32 scalar loss is NaN or infinite.
Tensor nonfinite_flag(const Tensor& loss);

// image.cu (x and dy [N,H,W,C]; the resize backward gathers over the outputs reading each input)
Tensor normalize_image(const ops::NormalizeImageParams& p, const Tensor& x);
Tensor normalize_image_backward(const ops::NormalizeImageParams& p, const Tensor& dy);
Tensor resize_bilinear_forward(const ops::ResizeBilinearParams& p, const Tensor& x);
Tensor resize_bilinear_backward(const ops::ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape);

// photo_edit.cu (x [...,3] f32 or u8; dtheta from per-block partials summed in block order, no atomics)
Tensor photo_edit_forward(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta);
Tensor photo_edit_backward_theta(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta, const Tensor& dy);

// fused_epilogue.cu (one elementwise pass; residual may be undefined)
Tensor batchnorm_apply(const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual);
// The convolution with its output's statistics gathered in its epilogue, then batchnorm_apply
// (conv_stats.h). Without a synchronised-BatchNorm reducer installed: the backend composes the
// ops when one is (the reducer needs the global mean before the squared deviations).
ops::ConvBatchNormTrainOut conv2d_batchnorm_train(const ops::Conv2dParams& conv, const ops::BatchNormParams& bn,
                                                  bool relu, const Tensor& x, const Tensor& w, const Tensor& gamma,
                                                  const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                                  const Tensor& residual);

}  // namespace ae::cuda

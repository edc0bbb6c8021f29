#pragma once
// The one list of the backend ops: each op's return type, name, parameters and arguments, written
// once. From it come the ops::Backend virtuals (backend.h), the declarations of each backend's
// functions (cpu/cpu_ops.h, cuda/cuda_ops.h) and the backends' overrides that call them
// (cpu/cpu_backend.cpp, cuda/cuda_backend.cu), so adding an op means: its entry here, its
// documented declaration in ops.h (or graph.h), its argument checks in kernels/<family>.cpp, and
// its two kernels, kernels/cpu/<family>_cpu.cpp and kernels/cuda/<family>.cu.
//
// X(return type, name, (parameters), (arguments)). Types are spelled as seen from namespace ae (or
// ae::ops/ae::cpu/ae::cuda, which see the same names): `ops::` before the ops' structs.
// No `//` comments inside a list: a line splice would comment out the entry below.
#include <cstdint>
#include <tuple>
#include <vector>

#include "kernels/ops.h"
#include "runtime/error.h"

// Every backend implements these (Backend declares them pure virtual).
#define AE_BACKEND_OPS(X)                                                                                            \
  /* conv: conv.cpp, cpu/conv_cpu.cpp, cuda/conv*.cu */                                                              \
  X(Tensor, conv2d_forward, (const ops::Conv2dParams& p, const Tensor& x, const Tensor& w), (p, x, w))              \
  X(Tensor, conv2d_backward_data, (const ops::Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape), \
    (p, dy, w, x_shape))                                                                                             \
  X(Tensor, conv2d_backward_weight,                                                                                  \
    (const ops::Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape), (p, x, dy, w_shape))      \
  X(Tensor, conv_fold_centre_tap, (const Tensor& w, const Tensor& a), (w, a))                                        \
  /* batchnorm (channels = last dimension; statistics and reductions deterministic) */                              \
  X(ops::BatchNormTrainOut, batchnorm_forward_train,                                                                 \
    (const ops::BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,  \
     Tensor& running_var),                                                                                           \
    (p, x, gamma, beta, running_mean, running_var))                                                                  \
  X(Tensor, batchnorm_forward_eval,                                                                                  \
    (const ops::BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,                       \
     const Tensor& running_mean, const Tensor& running_var),                                                         \
    (p, x, gamma, beta, running_mean, running_var))                                                                  \
  X(ops::BatchNormGrads, batchnorm_backward_train,                                                                   \
    (const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,     \
     const Tensor& relu_y),                                                                                          \
    (x, dy, gamma, save_mean, save_invstd, relu_y))                                                                  \
  X(ops::BatchNormGrads, batchnorm_backward_eval,                                                                    \
    (const ops::BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& gamma,                         \
     const Tensor& running_mean, const Tensor& running_var),                                                         \
    (p, x, dy, gamma, running_mean, running_var))                                                                    \
  /* activation (ReLU, PReLU: slope [1] shared or [C] per channel, dslope deterministic; dropout) */               \
  X(Tensor, relu_forward, (const Tensor& x), (x))                                                                    \
  X(Tensor, relu_backward, (const Tensor& y, const Tensor& dy), (y, dy))                                             \
  X(Tensor, prelu_forward, (const Tensor& x, const Tensor& slope), (x, slope))                                       \
  X(ops::PReluGrads, prelu_backward, (const Tensor& x, const Tensor& slope, const Tensor& dy), (x, slope, dy))       \
  X(ops::DropoutOut, dropout_forward, (const ops::DropoutParams& p, const Tensor& x), (p, x))                         \
  X(Tensor, dropout_backward, (const ops::DropoutParams& p, const Tensor& mask, const Tensor& dy), (p, mask, dy))    \
  /* elementwise */                                                                                                  \
  X(Tensor, add, (const Tensor& a, const Tensor& b), (a, b))                                                         \
  X(Tensor, scale, (const Tensor& a, float s), (a, s))                                                               \
  X(void, add_inplace, (Tensor& a, const Tensor& b, float s), (a, b, s))                                             \
  X(Tensor, add_relu, (const Tensor& a, const Tensor& b), (a, b))                                                    \
  X(Tensor, cast, (const Tensor& x, DType to), (x, to))                                                              \
  /* pool (backward passes gather over input positions: no atomics) */                                             \
  X(ops::MaxPoolOut, maxpool2d_forward, (const ops::MaxPool2dParams& p, const Tensor& x), (p, x))                    \
  X(Tensor, maxpool2d_backward,                                                                                      \
    (const ops::MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape),                  \
    (p, dy, argmax, x_shape))                                                                                        \
  X(Tensor, adaptive_avgpool2d_forward, (const ops::AdaptiveAvgPool2dParams& p, const Tensor& x), (p, x))            \
  X(Tensor, adaptive_avgpool2d_backward,                                                                             \
    (const ops::AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape), (p, dy, x_shape))               \
  /* linear */                                                                                                       \
  X(Tensor, linear_forward, (const Tensor& x, const Tensor& w, const Tensor& bias), (x, w, bias))                    \
  X(ops::LinearGrads, linear_backward,                                                                               \
    (const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx), (x, w, dy, has_bias, need_dx)) \
  /* loss */                                                                                                         \
  X(Tensor, mse_loss_forward, (const Tensor& pred, const Tensor& target), (pred, target))                            \
  X(Tensor, mse_loss_backward, (const Tensor& pred, const Tensor& target, float dloss), (pred, target, dloss))       \
  /* optimizer */                                                                                                    \
  X(void, sgd_step,                                                                                                  \
    (const ops::SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step),               \
    (p, param, grad, momentum_buf, step))                                                                            \
  X(void, adam_step,                                                                                                 \
    (const ops::AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step),              \
    (p, param, grad, m, v, step))                                                                                    \
  X(void, sgd_step_multi,                                                                                            \
    (const ops::SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,           \
     const std::vector<Tensor*>& momentum_bufs, int64_t step),                                                       \
    (p, params, grads, momentum_bufs, step))                                                                         \
  X(void, adam_step_multi,                                                                                           \
    (const ops::AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,          \
     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step),                                    \
    (p, params, grads, m, v, step))                                                                                  \
  /* image (x and dy [N,H,W,C]: image.cpp reshapes a single [H,W,C] image) */                                       \
  X(Tensor, normalize_image, (const ops::NormalizeImageParams& p, const Tensor& x), (p, x))                          \
  X(Tensor, normalize_image_backward, (const ops::NormalizeImageParams& p, const Tensor& dy), (p, dy))               \
  X(Tensor, resize_bilinear_forward, (const ops::ResizeBilinearParams& p, const Tensor& x), (p, x))                  \
  X(Tensor, resize_bilinear_backward, (const ops::ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape),  \
    (p, dy, x_shape))                                                                                                \
  /* photo_edit (x [N,H,W,3] or [H,W,3], f32 or u8; dy f32 with x's shape) */                                       \
  X(Tensor, photo_edit_forward, (const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta), (p, x, theta)) \
  X(Tensor, photo_edit_backward_theta,                                                                               \
    (const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta, const Tensor& dy), (p, x, theta, dy))      \
  /* fused (one elementwise pass; residual may be undefined) */                                                     \
  X(Tensor, batchnorm_apply,                                                                                         \
    (const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,                  \
     const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual),                                        \
    (p, x, gamma, beta, mean, var_or_invstd, residual))

// CUDA only (kernels/graph.h): the capturable optimiser steps and the device-side finiteness flag.
// Backend's defaults refuse them by name; the CUDA backend implements them.
#define AE_CUDA_ONLY_OPS(X)                                                                                          \
  X(Tensor, sgd_coefficient_bytes, (const ops::SgdParams& p, int64_t step), (p, step))                               \
  X(Tensor, adam_coefficient_bytes, (const ops::AdamParams& p, int64_t step), (p, step))                             \
  X(void, sgd_step_multi_device,                                                                                     \
    (const ops::SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,           \
     const std::vector<Tensor*>& momentum_bufs, const Tensor& coefficients, const Tensor& skip),                      \
    (p, params, grads, momentum_bufs, coefficients, skip))                                                           \
  X(void, adam_step_multi_device,                                                                                    \
    (const ops::AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,           \
     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const Tensor& coefficients, const Tensor& skip),  \
    (p, params, grads, m, v, coefficients, skip))                                                                    \
  X(Tensor, nonfinite_flag, (const Tensor& loss), (loss))

// What the lists expand to.
#define AE_OP_DECLARE_FUNCTION(ret_, op_, params_, args_) ret_ op_ params_;
#define AE_OP_DECLARE_VIRTUAL(ret_, op_, params_, args_) virtual ret_ op_ params_ const = 0;
// Backend's default for an op only some backends have: an ae::Error naming the op and the backend.
#define AE_OP_REFUSE_CUDA_ONLY(ret_, op_, params_, args_)                                                  \
  virtual ret_ op_ params_ const {                                                                          \
    (void)std::forward_as_tuple args_;                                                                      \
    AE_FAIL(#op_ ": the " << this->name() << " backend has no capturable steps (CUDA only)");              \
  }
// An override of Backend's virtual that calls the function of the same name in namespace `ns_`
// (through a one-argument wrapper: #define X(...) AE_OP_OVERRIDE_CALLING(cpu, __VA_ARGS__)).
#define AE_OP_OVERRIDE_CALLING(ns_, ret_, op_, params_, args_) \
  ret_ op_ params_ const override { return ns_::op_ args_; }

#pragma once
// The interface every backend implements: one virtual per op of kernels/ops.h, same signatures.
// ops.cpp-family files validate arguments once, then dispatch here on the inputs' device.
#include <functional>
#include <memory>
#include <string>

#include "kernels/graph.h"
#include "kernels/ops.h"
#include "runtime/error.h"

namespace ae::ops {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w) const = 0;
  virtual Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape) const = 0;
  virtual Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape) const = 0;
  virtual BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var) const = 0;
  virtual Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var) const = 0;
  virtual BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd) const = 0;
  virtual BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var) const = 0;
  virtual Tensor relu_forward(const Tensor& x) const = 0;
  virtual Tensor relu_backward(const Tensor& y, const Tensor& dy) const = 0;
  virtual Tensor prelu_forward(const Tensor& x, const Tensor& slope) const = 0;
  virtual PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy) const = 0;
  virtual DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x) const = 0;
  virtual Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy) const = 0;
  virtual Tensor add(const Tensor& a, const Tensor& b) const = 0;
  virtual Tensor scale(const Tensor& a, float s) const = 0;
  virtual void add_inplace(Tensor& a, const Tensor& b, float s) const = 0;
  virtual Tensor add_relu(const Tensor& a, const Tensor& b) const = 0;
  virtual MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x) const = 0;
  virtual Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape) const = 0;
  virtual Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x) const = 0;
  virtual Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape) const = 0;
  virtual Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias) const = 0;
  virtual LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx) const = 0;
  virtual Tensor mse_loss_forward(const Tensor& pred, const Tensor& target) const = 0;
  virtual Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss) const = 0;
  virtual void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) const = 0;
  virtual void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) const = 0;
  virtual void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs, int64_t step) const = 0;
  virtual void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step) const = 0;
  // Image ops: x/dy arrive as [N,H,W,C] (kernels/image.cpp reshapes a single [H,W,C] image).
  virtual Tensor normalize_image(const NormalizeImageParams& p, const Tensor& x) const = 0;
  virtual Tensor normalize_image_backward(const NormalizeImageParams& p, const Tensor& dy) const = 0;
  virtual Tensor resize_bilinear_forward(const ResizeBilinearParams& p, const Tensor& x) const = 0;
  virtual Tensor resize_bilinear_backward(const ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape) const = 0;
  // Photo edits: x is [N,H,W,3] or [H,W,3] (f32 or u8), dy f32 with x's shape.
  virtual Tensor photo_edit_forward(const PhotoEditParams& p, const Tensor& x, const Tensor& theta) const = 0;
  virtual Tensor photo_edit_backward_theta(const PhotoEditParams& p, const Tensor& x, const Tensor& theta, const Tensor& dy) const = 0;
  // Fused epilogue; residual may be undefined.
  virtual Tensor batchnorm_apply(const BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) const = 0;
  // Fused ops a backend may speed up; by default the composition they are defined as.
  virtual Tensor conv2d_batchnorm(const Conv2dParams& conv, const BatchNormApplyParams& bn, const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) const {
    BatchNormApplyParams in_place = bn;
    in_place.in_place = true;  // the convolution's own output, read by nothing else
    return batchnorm_apply(in_place, conv2d_forward(conv, x, w), gamma, beta, mean, var_or_invstd, residual);
  }
  virtual ConvBatchNormTrainOut conv2d_batchnorm_train(const Conv2dParams& conv, const BatchNormParams& bn, bool relu, const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var, const Tensor& residual) const {
    ConvBatchNormTrainOut out;
    out.conv = conv2d_forward(conv, x, w);
    BatchNormTrainOut b = batchnorm_forward_train(bn, out.conv, gamma, beta, running_mean, running_var);
    out.save_mean = b.save_mean;
    out.save_invstd = b.save_invstd;
    if (residual.defined()) {
      out.y = relu ? add_relu(b.y, residual) : add(b.y, residual);
    } else {
      out.y = relu ? relu_forward(b.y) : b.y;
    }
    return out;
  }
  // Device graphs (kernels/graph.h); a backend without them says so.
  virtual std::unique_ptr<DeviceGraph> capture_graph(const std::string& name, const std::function<void()>& work) const {
    (void)work;
    AE_FAIL("capture_graph '" << name << "': the " << this->name() << " backend has no device graphs (CUDA only)");
  }
  // Capturable optimiser steps (kernels/graph.h); CUDA only.
  virtual Tensor sgd_coefficient_bytes(const SgdParams& p, int64_t step) const {
    (void)p;
    (void)step;
    AE_FAIL("sgd_coefficient_bytes: the " << name() << " backend has no capturable steps (CUDA only)");
  }
  virtual Tensor adam_coefficient_bytes(const AdamParams& p, int64_t step) const {
    (void)p;
    (void)step;
    AE_FAIL("adam_coefficient_bytes: the " << name() << " backend has no capturable steps (CUDA only)");
  }
  virtual void sgd_step_multi_device(const SgdParams& p, const std::vector<Tensor*>& params,
                                     const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs,
                                     const Tensor& coefficients, const Tensor& skip) const {
    (void)p, (void)params, (void)grads, (void)momentum_bufs, (void)coefficients, (void)skip;
    AE_FAIL("sgd_step_multi_device: the " << name() << " backend has no capturable steps (CUDA only)");
  }
  virtual void adam_step_multi_device(const AdamParams& p, const std::vector<Tensor*>& params,
                                      const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
                                      const std::vector<Tensor*>& v, const Tensor& coefficients,
                                      const Tensor& skip) const {
    (void)p, (void)params, (void)grads, (void)m, (void)v, (void)coefficients, (void)skip;
    AE_FAIL("adam_step_multi_device: the " << name() << " backend has no capturable steps (CUDA only)");
  }
  virtual Tensor nonfinite_flag(const Tensor& loss) const {
    (void)loss;
    AE_FAIL("nonfinite_flag: the " << name() << " backend has no capturable steps (CUDA only)");
  }
};

// The backend for a device; throws ae::Error naming the op when that device has none.
const Backend& backend_for(const char* op, Device device);
// Checks that all defined tensors share one device and returns its backend.
const Backend& backend_for(const char* op, std::initializer_list<const Tensor*> tensors);
// Registered at start-up by the CUDA backend (real or emulated device).
void register_cuda_backend(const Backend* backend);
const Backend* cuda_backend();

}  // namespace ae::ops

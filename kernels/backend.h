#pragma once
// The interface every backend implements: one virtual per op of kernels/ops.h, same signatures,
// declared from the one op list (kernels/op_list.h). The kernels/<family>.cpp files validate
// arguments once, then dispatch here on the inputs' device.
#include <functional>
#include <memory>
#include <string>

#include "kernels/graph.h"
#include "kernels/op_list.h"
#include "kernels/ops.h"
#include "runtime/error.h"

namespace ae::ops {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  AE_BACKEND_OPS(AE_OP_DECLARE_VIRTUAL)
  // Fused ops a backend may speed up; by default the composition they are defined as.
  virtual Tensor conv2d_batchnorm(const Conv2dParams& conv, const BatchNormApplyParams& bn, const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) const {
    BatchNormApplyParams in_place = bn;
    in_place.in_place = true;  // the convolution's own output, read by nothing else
    return batchnorm_apply(in_place, conv2d_forward(conv, x, w), gamma, beta, mean, var_or_invstd, residual);
  }
  // bf16 (a residual, y_dtype): the f32 sequence on the widened residual, y cast at the end.
  virtual ConvBatchNormTrainOut conv2d_batchnorm_train(const Conv2dParams& conv, const BatchNormParams& bn, bool relu, const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var, const Tensor& residual, DType y_dtype) const {
    ConvBatchNormTrainOut out;
    out.conv = conv2d_forward(conv, x, w);
    BatchNormTrainOut b = batchnorm_forward_train(bn, out.conv, gamma, beta, running_mean, running_var);
    out.save_mean = b.save_mean;
    out.save_invstd = b.save_invstd;
    if (residual.defined()) {
      const Tensor r = residual.dtype() == DType::bf16 ? cast(residual, DType::f32) : residual;
      out.y = relu ? add_relu(b.y, r) : add(b.y, r);
    } else {
      out.y = relu ? relu_forward(b.y) : b.y;
    }
    if (y_dtype == DType::bf16) out.y = cast(out.y, DType::bf16);  // a backend's cast changes the dtype
    return out;
  }
  // Device graphs (kernels/graph.h); a backend without them says so.
  virtual std::unique_ptr<DeviceGraph> capture_graph(const std::string& name, const std::function<void()>& work) const {
    (void)work;
    AE_FAIL("capture_graph '" << name << "': the " << this->name() << " backend has no device graphs (CUDA only)");
  }
  // Capturable optimiser steps (kernels/graph.h); CUDA only.
  AE_CUDA_ONLY_OPS(AE_OP_REFUSE_CUDA_ONLY)
};

// The backend for a device; throws ae::Error naming the op when that device has none.
const Backend& backend_for(const char* op, Device device);
// Checks that all defined tensors share one device and returns its backend.
const Backend& backend_for(const char* op, std::initializer_list<const Tensor*> tensors);
// Registered at start-up by the CUDA backend (real or emulated device).
void register_cuda_backend(const Backend* backend);
const Backend* cuda_backend();

}  // namespace ae::ops

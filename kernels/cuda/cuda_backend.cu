// Adapts the ae::cuda op implementations to the ops::Backend interface. Every op of kernels/ops.h
// has a CUDA kernel; a shape a kernel cannot take (e.g. a grid too large) is an ae::Error from that
// kernel's launch naming the op and the shape: there is no silent fallback to the CPU (DESIGN.md).
#include "kernels/backend.h"
#include "kernels/batchnorm_sync.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/graph.h"

namespace ae::cuda {
namespace {

using namespace ae::ops;

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w) const override {
    return cuda::conv2d_forward(p, x, w);
  }
  Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w,
                              const Shape& x_shape) const override {
    return cuda::conv2d_backward_data(p, dy, w, x_shape);
  }
  Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy,
                                const Shape& w_shape) const override {
    return cuda::conv2d_backward_weight(p, x, dy, w_shape);
  }
  BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                            const Tensor& beta, Tensor& running_mean,
                                            Tensor& running_var) const override {
    return cuda::batchnorm_forward_train(p, x, gamma, beta, running_mean, running_var);
  }
  Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                const Tensor& running_mean, const Tensor& running_var) const override {
    return cuda::batchnorm_forward_eval(p, x, gamma, beta, running_mean, running_var);
  }
  BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                          const Tensor& save_mean, const Tensor& save_invstd) const override {
    return cuda::batchnorm_backward_train(x, dy, gamma, save_mean, save_invstd);
  }
  BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy,
                                         const Tensor& gamma, const Tensor& running_mean,
                                         const Tensor& running_var) const override {
    return cuda::batchnorm_backward_eval(p, x, dy, gamma, running_mean, running_var);
  }
  Tensor relu_forward(const Tensor& x) const override { return cuda::relu_forward(x); }
  Tensor relu_backward(const Tensor& y, const Tensor& dy) const override { return cuda::relu_backward(y, dy); }
  Tensor prelu_forward(const Tensor& x, const Tensor& slope) const override { return cuda::prelu_forward(x, slope); }
  PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy) const override {
    return cuda::prelu_backward(x, slope, dy);
  }
  DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x) const override {
    return cuda::dropout_forward(p, x);
  }
  Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy) const override {
    return cuda::dropout_backward(p, mask, dy);
  }
  Tensor add(const Tensor& a, const Tensor& b) const override { return cuda::add(a, b); }
  Tensor scale(const Tensor& a, float s) const override { return cuda::scale(a, s); }
  void add_inplace(Tensor& a, const Tensor& b, float s) const override { cuda::add_inplace(a, b, s); }
  Tensor add_relu(const Tensor& a, const Tensor& b) const override { return cuda::add_relu(a, b); }
  MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x) const override {
    return cuda::maxpool2d_forward(p, x);
  }
  Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax,
                            const Shape& x_shape) const override {
    return cuda::maxpool2d_backward(p, dy, argmax, x_shape);
  }
  Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x) const override {
    return cuda::adaptive_avgpool2d_forward(p, x);
  }
  Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy,
                                     const Shape& x_shape) const override {
    return cuda::adaptive_avgpool2d_backward(p, dy, x_shape);
  }
  Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias) const override {
    return cuda::linear_forward(x, w, bias);
  }
  LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias,
                              bool need_dx) const override {
    return cuda::linear_backward(x, w, dy, has_bias, need_dx);
  }
  Tensor mse_loss_forward(const Tensor& pred, const Tensor& target) const override {
    return cuda::mse_loss_forward(pred, target);
  }
  Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss) const override {
    return cuda::mse_loss_backward(pred, target, dloss);
  }
  void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf,
                int64_t step) const override {
    cuda::sgd_step(p, param, grad, momentum_buf, step);
  }
  void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                 int64_t step) const override {
    cuda::adam_step(p, param, grad, m, v, step);
  }
  void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                      const std::vector<Tensor*>& momentum_bufs, int64_t step) const override {
    cuda::sgd_step_multi(p, params, grads, momentum_bufs, step);
  }
  void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                       const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step) const override {
    cuda::adam_step_multi(p, params, grads, m, v, step);
  }
  Tensor normalize_image(const NormalizeImageParams& p, const Tensor& x) const override {
    return cuda::normalize_image(p, x);
  }
  Tensor normalize_image_backward(const NormalizeImageParams& p, const Tensor& dy) const override {
    return cuda::normalize_image_backward(p, dy);
  }
  Tensor resize_bilinear_forward(const ResizeBilinearParams& p, const Tensor& x) const override {
    return cuda::resize_bilinear_forward(p, x);
  }
  Tensor resize_bilinear_backward(const ResizeBilinearParams& p, const Tensor& dy,
                                  const Shape& x_shape) const override {
    return cuda::resize_bilinear_backward(p, dy, x_shape);
  }
  Tensor photo_edit_forward(const PhotoEditParams& p, const Tensor& x, const Tensor& theta) const override {
    return cuda::photo_edit_forward(p, x, theta);
  }
  Tensor photo_edit_backward_theta(const PhotoEditParams& p, const Tensor& x, const Tensor& theta,
                                   const Tensor& dy) const override {
    return cuda::photo_edit_backward_theta(p, x, theta, dy);
  }
  Tensor batchnorm_apply(const BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) const override {
    return cuda::batchnorm_apply(p, x, gamma, beta, mean, var_or_invstd, residual);
  }
  ConvBatchNormTrainOut conv2d_batchnorm_train(const Conv2dParams& conv, const BatchNormParams& bn, bool relu,
                                               const Tensor& x, const Tensor& w, const Tensor& gamma,
                                               const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                               const Tensor& residual) const override {
    if (batchnorm_sync_reducer() != nullptr) {  // synchronised BatchNorm: the composition (cuda_ops.h)
      return Backend::conv2d_batchnorm_train(conv, bn, relu, x, w, gamma, beta, running_mean, running_var, residual);
    }
    return cuda::conv2d_batchnorm_train(conv, bn, relu, x, w, gamma, beta, running_mean, running_var, residual);
  }
  std::unique_ptr<DeviceGraph> capture_graph(const std::string& name,
                                             const std::function<void()>& work) const override {
    auto g = std::make_unique<Graph>(name);
    g->math = conv_math();  // before the capture: it picks the kernels the capture records
    g->graph.capture(work);
    return g;
  }
  Tensor sgd_coefficient_bytes(const SgdParams& p, int64_t step) const override {
    return cuda::sgd_coefficient_bytes(p, step);
  }
  Tensor adam_coefficient_bytes(const AdamParams& p, int64_t step) const override {
    return cuda::adam_coefficient_bytes(p, step);
  }
  void sgd_step_multi_device(const SgdParams& p, const std::vector<Tensor*>& params,
                             const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& momentum_bufs,
                             const Tensor& coefficients, const Tensor& skip) const override {
    cuda::sgd_step_multi_device(p, params, grads, momentum_bufs, coefficients, skip);
  }
  void adam_step_multi_device(const AdamParams& p, const std::vector<Tensor*>& params,
                              const std::vector<const Tensor*>& grads, const std::vector<Tensor*>& m,
                              const std::vector<Tensor*>& v, const Tensor& coefficients,
                              const Tensor& skip) const override {
    cuda::adam_step_multi_device(p, params, grads, m, v, coefficients, skip);
  }
  Tensor nonfinite_flag(const Tensor& loss) const override { return cuda::nonfinite_flag(loss); }

 private:
  struct Graph final : DeviceGraph {
    explicit Graph(const std::string& name) : graph(name) {}
    void replay() override { graph.replay(); }
    std::size_t node_count() const override { return graph.node_count(); }
    std::size_t pool_bytes() const override { return graph.pool_bytes(); }
    const std::string& name() const override { return graph.name(); }
    bool settings_changed() const override { return conv_math() != math; }
    CapturedGraph graph;
    ConvMath math = ConvMath::f32;
  };
};

}  // namespace

const ops::Backend* the_backend() {
  static const CudaBackend backend;
  return &backend;
}

}  // namespace ae::cuda

// Adapts the ae::cuda op implementations to the ops::Backend interface: an override per op of the op
// lists (kernels/op_list.h) calling the function of the same name, the fused training op, and device
// graphs. Every op of kernels/ops.h has a CUDA kernel; a shape a kernel cannot take (e.g. a grid too
// large) is an ae::Error from that kernel's launch naming the op and the shape: there is no silent
// fallback to the CPU (DESIGN.md).
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
#define AE_CUDA_OVERRIDE(...) AE_OP_OVERRIDE_CALLING(cuda, __VA_ARGS__)
  AE_BACKEND_OPS(AE_CUDA_OVERRIDE)
  AE_CUDA_ONLY_OPS(AE_CUDA_OVERRIDE)
#undef AE_CUDA_OVERRIDE
  ConvBatchNormTrainOut conv2d_batchnorm_train(const Conv2dParams& conv, const BatchNormParams& bn, bool relu,
                                               const Tensor& x, const Tensor& w, const Tensor& gamma,
                                               const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                               const Tensor& residual, DType y_dtype) const override {
    if (batchnorm_sync_reducer() != nullptr) {  // synchronised BatchNorm: the composition (cuda_ops.h)
      return Backend::conv2d_batchnorm_train(conv, bn, relu, x, w, gamma, beta, running_mean, running_var, residual,
                                             y_dtype);
    }
    return cuda::conv2d_batchnorm_train(conv, bn, relu, x, w, gamma, beta, running_mean, running_var, residual,
                                        y_dtype);
  }
  std::unique_ptr<DeviceGraph> capture_graph(const std::string& name,
                                             const std::function<void()>& work) const override {
    auto g = std::make_unique<Graph>(name);
    g->math = conv_math();  // before the capture: it picks the kernels the capture records
    g->graph.capture(work);
    return g;
  }

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

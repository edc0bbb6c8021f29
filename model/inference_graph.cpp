#include "model/inference_graph.h"

#include "runtime/error.h"

namespace ae::model {

InferenceGraph::InferenceGraph(ResNet18& net)
    : net_(net), graph_(net, "ResNet-18 inference", [&net](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{net.forward(in[0])};
      }) {}

Tensor InferenceGraph::forward(const Tensor& x) {
  AE_CHECK(!net_.training() && !net_.grad_enabled(),
           "InferenceGraph: the model is in " << (net_.training() ? "training mode" : "eval mode with grad enabled")
                                              << "; a graph captures the eval-mode forward without grad "
                                                 "(set_training(false), set_grad_enabled(false))");
  const Device device = net_.device();
  AE_CHECK(device.is_cuda(), "InferenceGraph: the model is on " << device.str()
                                                                << "; device graphs exist on CUDA devices only");
  AE_CHECK(x.defined() && x.dtype() == DType::f32 && x.shape().size() == 4 && x.dim(3) == 3,
           "InferenceGraph: input " << x.desc() << " is not an f32 [N,H,W,3] batch");
  return graph_.run({x})[0];
}

}  // namespace ae::model

#include "model/inference_graph.h"

#include "runtime/error.h"

namespace ae::model {

InferenceGraph::InferenceGraph(ResNet18& net) : net_(net) {}

std::vector<bool> InferenceGraph::gradients_defined() {
  std::vector<bool> out;
  // (state_entries_for_reading: parameters() would drop the blocks' folded adapter weights)
  for (const StateEntry& e : net_.state_entries_for_reading())
    if (e.param != nullptr) out.push_back(e.param->grad.defined());
  return out;
}

bool InferenceGraph::still_valid(const Tensor& x) {
  if (!graph_ || input_.shape() != x.shape()) return false;
  if (graph_->settings_changed()) return false;
  if (net_.inference_cache_generation() != cache_generation_ || net_.inference_switches() != switches_) return false;
  return TensorIdentity::all_same(captured_with_, net_.state_tensors()) && gradients_defined() == had_grad_;
}

void InferenceGraph::capture(const Tensor& x) {
  const Device device = net_.device();
  output_ = Tensor();
  graph_.reset();  // its pool goes back to the allocator before the new capture takes memory
  input_ = Tensor::empty(x.shape(), DType::f32, device);
  input_.copy_from(x);
  (void)net_.forward(input_);  // warm-up: builds the lazily made caches outside the capture
  cache_generation_ = net_.inference_cache_generation();
  switches_ = net_.inference_switches();
  captured_with_ = TensorIdentity::of(net_.state_tensors());
  had_grad_ = gradients_defined();
  ++captures_;
  try {
    graph_ = ops::capture_graph(device, "ResNet-18 inference " + shape_str(x.shape()),
                                [this] { output_ = net_.forward(input_); });
  } catch (...) {
    output_ = Tensor();
    input_ = Tensor();
    throw;
  }
}

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
  if (!still_valid(x)) capture(x);
  input_.copy_from(x);
  graph_->replay();
  ++replays_;
  return output_.clone();  // the next replay overwrites output_
}

}  // namespace ae::model

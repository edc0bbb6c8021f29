#include "model/model_graph.h"

#include <algorithm>
#include <sstream>

#include "runtime/error.h"
#include "runtime/log.h"

namespace ae::model {

// ---------------------------------------------------------------- CapturedModelState

std::vector<bool> CapturedModelState::gradients_defined(ResNet18& net) {
  std::vector<bool> out;
  // (state_entries_for_reading: parameters() would drop the blocks' folded adapter weights)
  for (const StateEntry& e : net.state_entries_for_reading())
    if (e.param != nullptr) out.push_back(e.param->grad.defined());
  return out;
}

void CapturedModelState::record(ResNet18& net) {
  tensors_ = TensorIdentity::of(net.state_tensors());
  had_grad_ = gradients_defined(net);
  cache_generation_ = net.inference_cache_generation();
  switches_ = net.inference_switches();
}

bool CapturedModelState::still_holds(ResNet18& net) const {
  if (net.inference_cache_generation() != cache_generation_ || net.inference_switches() != switches_) return false;
  return TensorIdentity::all_same(tensors_, net.state_tensors()) && gradients_defined(net) == had_grad_;
}

// ---------------------------------------------------------------- ModelGraph

namespace {

std::string shapes_of(const std::vector<Tensor>& ts) {
  std::ostringstream s;
  for (std::size_t i = 0; i < ts.size(); ++i) s << (i > 0 ? " " : "") << shape_str(ts[i].shape());
  return s.str();
}

}  // namespace

ModelGraph::ModelGraph(ResNet18& net, std::string what, Function fn)
    : net_(net), what_(std::move(what)), fn_(std::move(fn)) {}

bool ModelGraph::still_valid(const std::vector<Tensor>& inputs) const {
  if (!graph_ || inputs.size() != inputs_.size() || graph_->settings_changed()) return false;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].shape() != inputs_[i].shape() || inputs[i].dtype() != inputs_[i].dtype()) return false;
  return captured_with_.still_holds(net_);
}

void ModelGraph::capture(const std::vector<Tensor>& inputs) {
  const Device device = net_.device();
  outputs_.clear();
  graph_.reset();  // its pool goes back to the allocator before the new capture takes memory
  inputs_.clear();
  for (const Tensor& x : inputs) {
    inputs_.push_back(Tensor::empty(x.shape(), x.dtype(), device));
    inputs_.back().copy_from(x);
  }
  (void)fn_(inputs_);  // warm-up: builds the lazily made caches outside the capture
  captured_with_.record(net_);
  ++captures_;
  try {
    graph_ = ops::capture_graph(device, what_ + " " + shapes_of(inputs), [this] { outputs_ = fn_(inputs_); });
  } catch (...) {
    outputs_.clear();
    inputs_.clear();
    throw;
  }
}

std::vector<Tensor> ModelGraph::run(const std::vector<Tensor>& inputs) {
  const Device device = net_.device();
  AE_CHECK(device.is_cuda(), what_ << " graph: the model is on " << device.str()
                                   << "; device graphs exist on CUDA devices only");
  AE_CHECK(!inputs.empty(), what_ << " graph: no inputs");
  for (std::size_t i = 0; i < inputs.size(); ++i)
    AE_CHECK(inputs[i].defined(), what_ << " graph: input " << i << " is undefined");
  if (!still_valid(inputs)) capture(inputs);
  for (std::size_t i = 0; i < inputs.size(); ++i) inputs_[i].copy_from(inputs[i]);
  graph_->replay();
  ++replays_;
  std::vector<Tensor> out;
  out.reserve(outputs_.size());
  for (const Tensor& y : outputs_) out.push_back(y.defined() ? y.clone() : Tensor());  // the next replay overwrites
  return out;
}

// ---------------------------------------------------------------- GraphShapeChoice

bool GraphShapeChoice::wants_graph(const Shape& shape) const {
  if (has_graph_) return shape == graph_shape_;
  return std::find(eager_shapes_.begin(), eager_shapes_.end(), shape) != eager_shapes_.end();
}

void GraphShapeChoice::ran_eagerly(const Shape& shape) {
  if (std::find(eager_shapes_.begin(), eager_shapes_.end(), shape) == eager_shapes_.end())
    eager_shapes_.push_back(shape);
}

// ---------------------------------------------------------------- GraphedFunction

GraphedFunction::GraphedFunction(ResNet18& net, bool graphs, std::string what, ModelGraph::Function fn)
    : net_(net), graphs_(graphs), what_(std::move(what)), fn_(std::move(fn)) {}

GraphedFunction::~GraphedFunction() = default;

std::vector<Tensor> GraphedFunction::operator()(const std::vector<Tensor>& inputs) {
  AE_CHECK(!inputs.empty() && inputs[0].defined(), what_ << ": no input");
  const Device device = net_.device();
  const Shape& key = inputs[0].shape();
  if (graphs_ && device.is_cuda() && shapes_.wants_graph(key)) {
    if (!graph_) graph_ = std::make_unique<ModelGraph>(net_, what_, fn_);
    const int captures_before = graph_->captures();
    try {
      std::vector<Tensor> out = graph_->run(inputs);
      shapes_.graph_ran(key);
      return out;
    } catch (const Error& e) {
      if (graph_->captures() == captures_before) throw;  // a replay that fails is a device error
      AE_WARN(what_ << " could not be captured as a CUDA graph (" << e.what() << "); it goes on without graphs");
      graphs_ = false;
      graph_.reset();
      shapes_.forget_graph();
    }
  }
  shapes_.ran_eagerly(key);
  std::vector<Tensor> on_device;
  on_device.reserve(inputs.size());
  for (const Tensor& x : inputs) on_device.push_back(x.to(device));
  return fn_(on_device);
}

}  // namespace ae::model

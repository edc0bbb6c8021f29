#pragma once
// Device graphs of functions of one ResNet-18 (kernels/graph.h; issue 15; docs/cuda_graphs.md): an
// eval forward (model/inference_graph.h), the input-gradient pass of enhancement and saliency, any
// fixed sequence of device ops that reads a model and a few input tensors.
//
// ModelGraph::run(inputs) copies the inputs into static input buffers, replays the graph and returns
// copies of the static outputs: bit for bit what the function returns when called eagerly (the same
// kernels with the same arguments in the same order). The graph is captured at the first call and
// captured again whenever what it froze no longer holds (CapturedModelState, and the inputs'
// shapes and dtypes: a graph has fixed shapes and addresses). A capture runs the function eagerly
// once first, so lazily built caches (the adapter folds; the input-gradient pass's BatchNorm-scaled
// backward weights, made through the host) exist before the capture, which refuses host transfers.
//
// The function must be a function of the model and the inputs it is given only (device ops, no
// host transfer, no host value read back), and the same function at every call: the graph replays
// what it did at the capture. Tensors it reads other than the model's state and its inputs are
// frozen by address: pass them as inputs.
//
// GraphedFunction is the loop-side rule on top (the rule of TrainStep and Predictor): which calls
// replay, and the eager fallback when a capture fails.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/graph.h"
#include "model/resnet18.h"

namespace ae::model {

// What a graph of a function of `net` froze besides its inputs:
//   - the storage and offset of every parameter and buffer (a model loaded into new tensors, to(),
//     a person's state bound onto a SharedModel);
//   - the blocks' cached folded weights (BasicBlock::cache_generation: the graph holds the address
//     of the fold it was captured with) and the blocks' inference switches;
//   - which parameters have a gradient (with one, a block runs its adapter unfolded).
// Values written in place into the same tensors (an optimiser step, load_state_dict into this
// model) need no new capture: a replay reads the weights' memory.
class CapturedModelState {
 public:
  void record(ResNet18& net);
  bool still_holds(ResNet18& net) const;

 private:
  static std::vector<bool> gradients_defined(ResNet18& net);

  std::vector<TensorIdentity> tensors_;  // net.state_tensors()
  std::vector<bool> had_grad_;
  uint64_t cache_generation_ = 0, switches_ = 0;
};

class ModelGraph {
 public:
  using Function = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;
  // `what` names the graph in messages ("ResNet-18 inference"). `fn` receives device tensors of the
  // model's device, the shapes and dtypes of run()'s inputs.
  ModelGraph(ResNet18& net, std::string what, Function fn);
  ModelGraph(const ModelGraph&) = delete;
  ModelGraph& operator=(const ModelGraph&) = delete;

  // inputs: on any device. The model must be on a CUDA device (an ae::Error otherwise).
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);

  int captures() const { return captures_; }  // how many times a graph was captured
  int64_t replays() const { return replays_; }
  const ops::DeviceGraph* graph() const { return graph_.get(); }

 private:
  bool still_valid(const std::vector<Tensor>& inputs) const;
  void capture(const std::vector<Tensor>& inputs);

  ResNet18& net_;
  std::string what_;
  Function fn_;
  std::unique_ptr<ops::DeviceGraph> graph_;
  std::vector<Tensor> inputs_, outputs_;  // the graph's static inputs and outputs
  CapturedModelState captured_with_;
  int captures_ = 0;
  int64_t replays_ = 0;
};

// Which batch shape a loop replays as a device graph (TrainStep, GraphedFunction): the first shape
// to come a second time (so the first batch of every shape runs eagerly, a warm-up before any
// capture, and a one-off shape, such as an epoch's short tail batch, never costs a capture or a
// graph's memory).
class GraphShapeChoice {
 public:
  // A graph should run this batch: the graph's shape, or, before there is one, a shape seen before.
  bool wants_graph(const Shape& shape) const;
  void ran_eagerly(const Shape& shape);
  void graph_ran(const Shape& shape) {
    graph_shape_ = shape;
    has_graph_ = true;
  }
  void forget_graph() { has_graph_ = false; }

 private:
  bool has_graph_ = false;
  Shape graph_shape_;
  std::vector<Shape> eager_shapes_;
};

// A function of a ResNet-18 called again and again (evaluation passes, enhancement steps, SmoothGrad
// batches). On a CUDA device, unless turned off, the calls whose first input has the chosen shape
// (GraphShapeChoice) replay one ModelGraph; the others run the function eagerly. A capture that
// fails is logged once (a warning naming `what`) and every call runs eagerly from then on; a replay
// that fails is a device error and is thrown. On the CPU every call is eager.
class GraphedFunction {
 public:
  GraphedFunction(ResNet18& net, bool graphs, std::string what, ModelGraph::Function fn);
  ~GraphedFunction();
  GraphedFunction(const GraphedFunction&) = delete;
  GraphedFunction& operator=(const GraphedFunction&) = delete;

  // inputs: on any device (moved to the model's for an eager call); at least one.
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs);

  int graph_captures() const { return graph_ ? graph_->captures() : 0; }
  int64_t graph_replays() const { return graph_ ? graph_->replays() : 0; }

 private:
  ResNet18& net_;
  bool graphs_;
  std::string what_;
  ModelGraph::Function fn_;
  std::unique_ptr<ModelGraph> graph_;
  GraphShapeChoice shapes_;
};

}  // namespace ae::model

#pragma once
// A ResNet-18 eval forward captured as a device graph (model/model_graph.h; issue 15) and replayed
// per batch: one graph launch instead of ~60 kernel launches and their host-side work.
//
// forward(x) copies x into a static input buffer, replays the graph and returns a copy of the
// static output, which is bit for bit the eager net.forward(x). The graph is captured at the first
// call and again whenever the input shape, the convolution arithmetic (--conv-math:
// DeviceGraph::settings_changed) or what CapturedModelState lists changes.
// The model must be in eval mode with grad disabled, on a CUDA device (an ae::Error otherwise).
#include <cstdint>

#include "model/model_graph.h"

namespace ae::model {

class InferenceGraph {
 public:
  explicit InferenceGraph(ResNet18& net);
  InferenceGraph(const InferenceGraph&) = delete;
  InferenceGraph& operator=(const InferenceGraph&) = delete;

  // x: [N,H,W,3] f32 on any device. Returns the model's output on the model's device.
  Tensor forward(const Tensor& x);

  int captures() const { return graph_.captures(); }  // how many times a graph was captured
  int64_t replays() const { return graph_.replays(); }
  const ops::DeviceGraph* graph() const { return graph_.graph(); }

 private:
  ResNet18& net_;
  ModelGraph graph_;
};

}  // namespace ae::model

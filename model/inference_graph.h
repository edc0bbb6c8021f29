#pragma once
// A ResNet-18 eval forward captured as a device graph (kernels/graph.h; issue 15) and replayed per
// batch: one graph launch instead of ~60 kernel launches and their host-side work.
//
// forward(x) copies x into a static input buffer, replays the graph and returns a copy of the
// static output, which is bit for bit the eager net.forward(x) (the same kernels with the same
// arguments run in the same order). The graph is captured at the first call and captured again
// whenever what it froze no longer holds:
//   - the input shape (a graph has fixed shapes and addresses);
//   - the storage or offset of any parameter or buffer (a model loaded into new tensors, to());
//   - the blocks' cached folded adapter weights (BasicBlock::cache_generation: the graph holds the
//     address of the fold it was captured with) and the blocks' inference switches;
//   - which parameters have a gradient (with one, a block runs its adapter unfolded).
// Values written in place into the same tensors (an optimiser step, load_state_dict into this
// model) need no new capture: the graph reads the weights' memory at every replay. A capture runs
// one eager forward first, so lazily built caches (the adapter folds, made through the host) exist
// before the capture, which refuses host transfers.
// Not noticed: a change of the CUDA convolution math (--conv-math) after the capture.
// The model must be in eval mode with grad disabled, on a CUDA device (an ae::Error otherwise).
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/graph.h"
#include "model/resnet18.h"

namespace ae::model {

class InferenceGraph {
 public:
  explicit InferenceGraph(ResNet18& net);
  InferenceGraph(const InferenceGraph&) = delete;
  InferenceGraph& operator=(const InferenceGraph&) = delete;

  // x: [N,H,W,3] f32 on any device. Returns the model's output on the model's device.
  Tensor forward(const Tensor& x);

  int captures() const { return captures_; }  // how many times a graph was captured
  int64_t replays() const { return replays_; }
  const ops::DeviceGraph* graph() const { return graph_.get(); }

 private:
  std::vector<bool> gradients_defined();
  bool still_valid(const Tensor& x);
  void capture(const Tensor& x);

  ResNet18& net_;
  std::unique_ptr<ops::DeviceGraph> graph_;
  Tensor input_, output_;  // the graph's static input and output
  std::vector<TensorIdentity> captured_with_;  // net_.state_tensors() at the capture
  std::vector<bool> had_grad_;                  // gradients_defined() at the capture
  uint64_t cache_generation_ = 0, switches_ = 0;
  int captures_ = 0;
  int64_t replays_ = 0;
};

}  // namespace ae::model

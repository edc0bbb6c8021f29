#pragma once
// A whole training step captured as a device graph and replayed per batch (issue 15; kernels/graph.h).
//
// The step is TrainStep::run's (zero_grad, training-mode forward, MSE, backward, every optimiser's
// update) with the two changes a graph needs, so that a replay makes exactly the eager step's bits:
//   - the optimisers' per-step coefficients (lr, Adam bias corrections, the step number) are read
//     from one small device buffer per optimiser, written before each replay
//     (Optimizer::next_step_coefficients / step_from_device), instead of kernel arguments that the
//     capture would freeze at their first value;
//   - the loss's finiteness is decided on the device (ops::nonfinite_flag) and the optimiser
//     kernels skip the update when it is set (AMP's found_inf), instead of the host reading the
//     loss between the forward and the backward (a host sync, refused in a capture). The host reads
//     the loss and the flag after the replay. As in TrainStep, a non-finite batch changes no
//     weight and no optimiser state and does not count as a step; its forward has run (BatchNorm
//     running statistics take the batch, as TrainStep's forward does).
//   - the dropout masks' per-step stream offset is read from a device buffer as well
//     (ResNet18::set_dropout_device_offset, installed for the capture only), written before each
//     replay from the model's dropout step, so every replay draws the eager step's fresh masks.
// Host-side counters the captured host code advanced once at the capture (BatchNorm
// num_batches_tracked, the model's dropout step) are restored after the capture and advanced by the
// same amount after every replay, as an eager step would.
// run() captures at its first call and again when the batch shape or any parameter's or buffer's
// tensor (storage, offset) changes. It refuses a CPU model; it has no data-parallel mode (the
// all-reduces are host calls), so TrainStep runs those steps eagerly.
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/graph.h"
#include "model/resnet18.h"
#include "train/optimizer.h"
#include "train/train_loop.h"

namespace ae::train {

class TrainGraph {
 public:
  TrainGraph(model::ResNet18& net, std::vector<Optimizer*> optimizers, Device device);
  TrainGraph(const TrainGraph&) = delete;
  TrainGraph& operator=(const TrainGraph&) = delete;

  // As TrainStep::run: `images` [B,H,W,3], `targets` [B,1] on any device.
  TrainStep::Outcome run(const Tensor& images, const Tensor& targets);

  // True when run() with these shapes would replay without a new capture.
  bool captured_for(const Tensor& images, const Tensor& targets) { return still_valid(images, targets); }

  int captures() const { return captures_; }
  int64_t replays() const { return replays_; }
  const ops::DeviceGraph* graph() const { return graph_.get(); }

 private:
  bool still_valid(const Tensor& images, const Tensor& targets);
  void capture(const Tensor& images, const Tensor& targets);
  std::vector<int64_t> counters();
  void set_counters(const std::vector<int64_t>& values);

  model::ResNet18& net_;
  std::vector<Optimizer*> optimizers_;
  Device device_;
  std::unique_ptr<ops::DeviceGraph> graph_;
  Tensor images_, targets_;             // static inputs
  std::vector<Tensor> coefficients_;    // one device buffer per optimiser
  Tensor dropout_offset_;               // i64 [1]: the step's dropout stream offset
  Tensor loss_, nonfinite_;             // static outputs
  std::vector<TensorIdentity> captured_with_;  // net_.state_tensors() at the capture
  uint64_t switches_ = 0;                      // net_.inference_switches() at the capture (activation storage)
  std::vector<int64_t> counter_steps_;  // what one step adds to each BatchNorm counter
  uint64_t dropout_steps_ = 0;          // what one step adds to the model's dropout step
  int captures_ = 0;
  int64_t replays_ = 0;
};

}  // namespace ae::train

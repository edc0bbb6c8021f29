#include "train/train_graph.h"

#include <cmath>

#include "kernels/ops.h"
#include "runtime/error.h"

namespace ae::train {

TrainGraph::TrainGraph(model::ResNet18& net, std::vector<Optimizer*> optimizers, Device device)
    : net_(net), optimizers_(std::move(optimizers)), device_(device) {}

std::vector<int64_t> TrainGraph::counters() {
  std::vector<int64_t> out;
  for (const model::StateEntry& e : net_.state_entries_for_reading())
    if (e.counter != nullptr) out.push_back(*e.counter);
  return out;
}

void TrainGraph::set_counters(const std::vector<int64_t>& values) {
  std::size_t i = 0;
  for (const model::StateEntry& e : net_.state_entries_for_reading())
    if (e.counter != nullptr) *e.counter = values.at(i++);
}

bool TrainGraph::still_valid(const Tensor& images, const Tensor& targets) {
  if (!graph_ || images_.shape() != images.shape() || targets_.shape() != targets.shape()) return false;
  return !graph_->settings_changed() && net_.inference_switches() == switches_ &&
         TensorIdentity::all_same(captured_with_, net_.state_tensors());
}

void TrainGraph::capture(const Tensor& images, const Tensor& targets) {
  loss_ = Tensor();
  nonfinite_ = Tensor();
  graph_.reset();  // its pool goes back to the allocator before the new capture takes memory
  images_ = Tensor::empty(images.shape(), DType::f32, device_);
  targets_ = Tensor::empty(targets.shape(), DType::f32, device_);
  coefficients_.clear();
  for (Optimizer* o : optimizers_) {
    const Tensor bytes = o->next_step_coefficients(device_);
    coefficients_.push_back(Tensor::empty(bytes.shape(), DType::u8, device_));
  }
  captured_with_ = TensorIdentity::of(net_.state_tensors());
  switches_ = net_.inference_switches();
  const std::vector<int64_t> counters_before = counters();
  const uint64_t dropout_before = net_.dropout_step();
  dropout_offset_ = Tensor::zeros({1}, DType::i64, device_);
  net_.set_dropout_device_offset(dropout_offset_);  // for the capture only: eager steps pass it by value
  ++captures_;
  try {
    graph_ = ops::capture_graph(device_, "training step " + shape_str(images.shape()), [this] {
      net_.zero_grad();
      const Tensor y = net_.forward(images_);
      loss_ = ops::mse_loss_forward(y, targets_);
      nonfinite_ = ops::nonfinite_flag(loss_);
      net_.backward(ops::mse_loss_backward(y, targets_));
      for (std::size_t i = 0; i < optimizers_.size(); ++i)
        optimizers_[i]->step_from_device(coefficients_[i], nonfinite_);
    });
  } catch (...) {
    net_.set_dropout_device_offset(Tensor());
    set_counters(counters_before);
    net_.set_dropout_step(dropout_before);
    loss_ = Tensor();
    nonfinite_ = Tensor();
    throw;
  }
  net_.set_dropout_device_offset(Tensor());
  // The captured host code ran once; the step it describes has not. Undo its counting and keep
  // what one step adds, for every replay.
  const std::vector<int64_t> counters_after = counters();
  counter_steps_.assign(counters_after.size(), 0);
  for (std::size_t i = 0; i < counters_after.size(); ++i) counter_steps_[i] = counters_after[i] - counters_before[i];
  dropout_steps_ = net_.dropout_step() - dropout_before;
  set_counters(counters_before);
  net_.set_dropout_step(dropout_before);
}

TrainStep::Outcome TrainGraph::run(const Tensor& images, const Tensor& targets) {
  AE_CHECK(device_.is_cuda() && net_.device() == device_,
           "TrainGraph: the model is on " << net_.device().str() << " and the step on " << device_.str()
                                          << "; device graphs exist on CUDA devices only");
  AE_CHECK(net_.training() && net_.grad_enabled(),
           "TrainGraph: the model must be in training mode with grad enabled (set_training(true))");
  AE_CHECK(images.shape().size() == 4 && images.dim(0) >= 2 && targets.shape() == Shape({images.dim(0), 1}),
           "TrainGraph: images " << images.desc() << " and targets " << targets.desc()
                                 << " are not [B,H,W,3] and [B,1] with B >= 2");
  if (!still_valid(images, targets)) capture(images, targets);
  images_.copy_from(images);
  targets_.copy_from(targets);
  for (std::size_t i = 0; i < optimizers_.size(); ++i)
    coefficients_[i].copy_from(optimizers_[i]->next_step_coefficients(device_));
  Tensor offset = Tensor::empty({1}, DType::i64);
  *offset.data<int64_t>() = model::ResNet18::dropout_step_offset(net_.dropout_step());
  dropout_offset_.copy_from(offset);
  graph_->replay();
  ++replays_;
  TrainStep::Outcome out;
  out.loss = loss_.item();
  out.finite = *nonfinite_.to(Device::cpu()).data<int64_t>() == 0;
  std::vector<int64_t> c = counters();
  for (std::size_t i = 0; i < c.size(); ++i) c[i] += counter_steps_[i];
  set_counters(c);
  net_.set_dropout_step(net_.dropout_step() + dropout_steps_);
  if (out.finite)
    for (Optimizer* o : optimizers_) o->count_step();
  return out;
}

}  // namespace ae::train

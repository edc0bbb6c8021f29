#pragma once
// Optimisers over a model's trainable parameters (torch.optim semantics, one multi-tensor op call per
// step) and the original system's step learning-rate schedule. The full state (moments and
// step count) can be exported as named tensors and restored, so a resumed run continues exactly.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "model/resnet18.h"

namespace ae::train {

enum class OptimizerKind { adam, adamw, sgd };
OptimizerKind parse_optimizer(const std::string& text);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::adam;
  float lr = 1e-3f;
  float weight_decay = 0.0f;
  float momentum = 0.9f;  // SGD only
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

// lr = base * decay^floor(epoch / every)  (epoch counted from 0), the seed system's schedule.
float step_lr(float base, float decay, int every, int64_t epoch);

class Optimizer {
 public:
  Optimizer(std::vector<model::ParamRef> params, OptimizerConfig config);

  void set_lr(float lr) { config_.lr = lr; }
  float lr() const { return config_.lr; }
  int64_t steps() const { return step_; }

  // One update of every parameter that has a gradient.
  void step();

  // The capturable form of step() (train/train_graph.h), CUDA only: the coefficients of the next
  // step (steps() + 1, with the current lr) as CPU bytes, to upload into a device buffer before the
  // launch or replay; the update with the coefficients read from that buffer, skipped when `skip`
  // (i64 [1], ops::nonfinite_flag) is set, the same bits as step(). It does not count the step:
  // count_step() does, once the caller knows the update was made.
  Tensor next_step_coefficients(Device device) const;
  void step_from_device(const Tensor& coefficients, const Tensor& skip);
  void count_step() { ++step_; }

  // "optim.m.<param>", "optim.v.<param>" (Adam) or "optim.buf.<param>" (SGD) plus the step count.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

 private:
  struct Slot {
    model::ParamRef ref;
    Tensor m, v;  // Adam moments, or m = SGD momentum buffer
  };
  struct Lists {
    std::vector<Tensor*> params, m, v;
    std::vector<const Tensor*> grads;
  };
  Lists lists();  // the parameters that have a gradient, with their state
  ops::SgdParams sgd_params() const;
  ops::AdamParams adam_params() const;

  std::vector<Slot> slots_;
  OptimizerConfig config_;
  int64_t step_ = 0;
};

}  // namespace ae::train

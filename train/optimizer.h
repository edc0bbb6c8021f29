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

  // "optim.m.<param>", "optim.v.<param>" (Adam) or "optim.buf.<param>" (SGD) plus the step count.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

 private:
  struct Slot {
    model::ParamRef ref;
    Tensor m, v;  // Adam moments, or m = SGD momentum buffer
  };
  std::vector<Slot> slots_;
  OptimizerConfig config_;
  int64_t step_ = 0;
};

}  // namespace ae::train

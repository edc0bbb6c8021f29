#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "kernels/graph.h"
#include "runtime/error.h"

namespace ae::train {

OptimizerKind parse_optimizer(const std::string& text) {
  if (text == "adam") return OptimizerKind::adam;
  if (text == "adamw") return OptimizerKind::adamw;
  if (text == "sgd") return OptimizerKind::sgd;
  AE_FAIL("unknown optimiser '" << text << "': expected adam, adamw or sgd");
}

float step_lr(float base, float decay, int every, int64_t epoch) {
  AE_CHECK(every > 0, "learning-rate schedule: decay interval must be positive, got " << every);
  return base * static_cast<float>(std::pow(static_cast<double>(decay), static_cast<double>(epoch / every)));
}

Optimizer::Optimizer(std::vector<model::ParamRef> params, OptimizerConfig config) : config_(config) {
  for (auto& p : params) {
    Slot s{p, Tensor::zeros(p.param->value.shape(), DType::f32, p.param->value.device()), Tensor()};
    if (config_.kind != OptimizerKind::sgd) s.v = Tensor::zeros(p.param->value.shape(), DType::f32, p.param->value.device());
    slots_.push_back(std::move(s));
  }
}

Optimizer::Lists Optimizer::lists() {
  // One multi-tensor op over every parameter that has a gradient (one launch on CUDA, not one per tensor).
  Lists l;
  for (auto& s : slots_) {
    model::Param& p = *s.ref.param;
    if (!p.grad.defined()) continue;
    l.params.push_back(&p.value);
    l.grads.push_back(&p.grad);
    l.m.push_back(&s.m);
    l.v.push_back(&s.v);
  }
  return l;
}

ops::SgdParams Optimizer::sgd_params() const {
  ops::SgdParams sp;
  sp.lr = config_.lr;
  sp.momentum = config_.momentum;
  sp.weight_decay = config_.weight_decay;
  return sp;
}

ops::AdamParams Optimizer::adam_params() const {
  ops::AdamParams ap;
  ap.lr = config_.lr;
  ap.beta1 = config_.beta1;
  ap.beta2 = config_.beta2;
  ap.eps = config_.eps;
  ap.weight_decay = config_.weight_decay;
  ap.decoupled = config_.kind == OptimizerKind::adamw;
  return ap;
}

void Optimizer::step() {
  ++step_;
  Lists l = lists();
  if (config_.kind == OptimizerKind::sgd) {
    ops::sgd_step_multi(sgd_params(), l.params, l.grads, l.m, step_);
  } else {
    ops::adam_step_multi(adam_params(), l.params, l.grads, l.m, l.v, step_);
  }
}

Tensor Optimizer::next_step_coefficients(Device device) const {
  return config_.kind == OptimizerKind::sgd ? ops::sgd_coefficient_bytes(device, sgd_params(), step_ + 1)
                                            : ops::adam_coefficient_bytes(device, adam_params(), step_ + 1);
}

void Optimizer::step_from_device(const Tensor& coefficients, const Tensor& skip) {
  Lists l = lists();
  if (config_.kind == OptimizerKind::sgd) {
    ops::sgd_step_multi_device(sgd_params(), l.params, l.grads, l.m, coefficients, skip);
  } else {
    ops::adam_step_multi_device(adam_params(), l.params, l.grads, l.m, l.v, coefficients, skip);
  }
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& s : slots_) {
    if (config_.kind == OptimizerKind::sgd) {
      out.emplace_back("optim.buf." + s.ref.name, s.m.to(Device::cpu()));
    } else {
      out.emplace_back("optim.m." + s.ref.name, s.m.to(Device::cpu()));
      out.emplace_back("optim.v." + s.ref.name, s.v.to(Device::cpu()));
    }
  }
  return out;
}

void Optimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [n, t] : state) by_name[n] = &t;
  auto restore = [&](const std::string& name, Tensor& dst) {
    auto it = by_name.find(name);
    AE_CHECK(it != by_name.end(), "optimiser state lacks '" << name << "'");
    AE_CHECK(it->second->shape() == dst.shape(), "optimiser state '" << name << "' has shape "
                                                                     << shape_str(it->second->shape())
                                                                     << ", expected " << shape_str(dst.shape()));
    dst.copy_from(it->second->to(dst.device()));
  };
  for (auto& s : slots_) {
    if (config_.kind == OptimizerKind::sgd) {
      restore("optim.buf." + s.ref.name, s.m);
    } else {
      restore("optim.m." + s.ref.name, s.m);
      restore("optim.v." + s.ref.name, s.v);
    }
  }
  step_ = steps;
}

}  // namespace ae::train

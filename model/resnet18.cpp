#include "model/resnet18.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>

#include "runtime/philox.h"

namespace ae::model {
namespace {

constexpr int kClassifierStage = 9;   // stages: 0 stem, 1..8 blocks, 9 fc
constexpr int kHeadOnly = 10;         // nothing before the seed head needs a gradient

// splitmix64: decorrelates the streams derived from one seed.
uint64_t mix(uint64_t seed, uint64_t salt) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (salt + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void fill_uniform(Tensor& t, uint64_t seed, float bound) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = bound * (2.0f * philox::uniform(seed, i) - 1.0f);
}

// Box-Muller on two philox uniforms per element.
void fill_normal(Tensor& t, uint64_t seed, float stddev) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double u1 = 1.0 - philox::uniform(seed, 2 * i);  // (0, 1]
    const double u2 = philox::uniform(seed, 2 * i + 1);
    p[i] = static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
  }
}

// FNV-1a of a parameter name.
uint64_t name_hash(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

ResNet18::ResNet18(const ModelConfig& config)
    : config_(config),
      conv1_(3, 64, 7, 2, 3, ParamGroup::backbone),
      bn1_(64, ParamGroup::bn_affine),
      maxpool_(ops::MaxPool2dParams{3, 3, 2, 2, 1, 1}) {
  const int64_t widths[4] = {64, 128, 256, 512};
  int64_t in = 64;
  for (int layer = 0; layer < 4; ++layer) {
    for (int block = 0; block < 2; ++block) {
      const int stride = (layer > 0 && block == 0) ? 2 : 1;
      blocks_.push_back(std::make_unique<BasicBlock>(block == 0 ? in : widths[layer], widths[layer], stride,
                                                     config.adapters));
    }
    in = widths[layer];
  }
  if (config.head == HeadType::linear) {
    fc_ = Linear(512, 1, ParamGroup::head);
  } else {
    fc_ = Linear(512, 1000, ParamGroup::backbone);
  }
  if (config.head == HeadType::seed) {
    head0_ = Linear(1000, 256, ParamGroup::head);
    head1_ = PReLU(ParamGroup::head);
    head2_ = Dropout(config.dropout);
    head3_ = BatchNorm(256, ParamGroup::head);
    head4_ = Linear(256, 256, ParamGroup::head);
    head5_ = PReLU(ParamGroup::head);
    head6_ = Dropout(config.dropout);
    head7_ = BatchNorm(256, ParamGroup::head);
    head8_ = Linear(256, 1, ParamGroup::head);
  }
  initialise();
  set_activation_dtype(default_activation_dtype());
}

void ResNet18::initialise() {
  int64_t previous_linear_fan_in = 0;  // a Linear bias follows its weight in state order
  for (StateEntry& e : state_entries()) {
    const int64_t fan_in = previous_linear_fan_in;
    previous_linear_fan_in = 0;
    if (e.param == nullptr) continue;
    Tensor& v = e.param->value;
    // Seeded by name, so the backbone of an adapter model equals the generic model's.
    const uint64_t seed = mix(config_.seed, name_hash(e.name));
    if (e.conv_weight) {
      if (e.param->group == ParamGroup::adapters) continue;  // zero: an adapted model starts as the generic one
      const int64_t fan_out = v.dim(0) * v.dim(1) * v.dim(2);
      fill_normal(v, seed, static_cast<float>(std::sqrt(2.0 / static_cast<double>(fan_out))));
    } else if (v.ndim() == 2) {  // Linear weight [out, in]
      previous_linear_fan_in = v.dim(1);
      fill_uniform(v, seed, static_cast<float>(1.0 / std::sqrt(static_cast<double>(v.dim(1)))));
    } else if (fan_in > 0) {  // Linear bias; BatchNorm biases keep their zeros, PReLU its 0.25
      fill_uniform(v, seed, static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in))));
    }
  }
}

std::vector<StateEntry> ResNet18::state_entries() { return collect_state(false); }
std::vector<StateEntry> ResNet18::state_entries_for_reading() { return collect_state(true); }

uint64_t ResNet18::inference_cache_generation() const {
  uint64_t g = 0;
  for (const auto& b : blocks_) g += b->cache_generation();
  return g;
}

uint64_t ResNet18::inference_switches() const {
  uint64_t bits = 0;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    if (blocks_[i]->fuse_inference_epilogues) bits |= uint64_t{1} << (2 * i);
    if (blocks_[i]->fold_adapters) bits |= uint64_t{2} << (2 * i);
  }
  if (activation_dtype_ == DType::bf16) bits |= uint64_t{1} << 63;
  return bits;
}

std::vector<StateEntry> ResNet18::collect_state(bool for_reading) {
  std::vector<StateEntry> out;
  conv1_.list_state("conv1.", out);
  bn1_.list_state("bn1.", out);
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    const std::string prefix = "layer" + std::to_string(i / 2 + 1) + "." + std::to_string(i % 2) + ".";
    if (for_reading) {
      blocks_[i]->list_state_for_reading(prefix, out);
    } else {
      blocks_[i]->list_state(prefix, out);
    }
  }
  fc_.list_state("fc.", out);
  if (config_.head == HeadType::seed) {
    head0_.list_state("head.0.", out);
    head1_.list_state("head.1.", out);
    head3_.list_state("head.3.", out);
    head4_.list_state("head.4.", out);
    head5_.list_state("head.5.", out);
    head7_.list_state("head.7.", out);
    head8_.list_state("head.8.", out);
  }
  return out;
}

// ---------------------------------------------------------------- forward / backward

namespace {

// Eval BatchNorm as the fused inference op (the same float operations as the layer's eval forward).
Tensor eval_bn(const BatchNorm& bn, const Tensor& x, bool relu) {
  ops::BatchNormApplyParams p;
  p.eps = bn.params.eps;
  p.stats = ops::BatchNormStats::running;
  p.relu = relu;
  return ops::batchnorm_apply(p, x, bn.weight.value, bn.bias.value, bn.running_mean, bn.running_var, Tensor());
}

}  // namespace

namespace {
std::atomic<int> g_default_activation_dtype{static_cast<int>(DType::f32)};
}  // namespace

void set_default_activation_dtype(DType dtype) {
  AE_CHECK(dtype == DType::f32 || dtype == DType::bf16,
           "activation storage " << dtype_name(dtype) << ": must be f32 or bf16");
  g_default_activation_dtype.store(static_cast<int>(dtype));
}

DType default_activation_dtype() { return static_cast<DType>(g_default_activation_dtype.load()); }

DType parse_activation_dtype(const std::string& text, const std::string& where) {
  if (text == "f32") return DType::f32;
  if (text == "bf16") return DType::bf16;
  AE_FAIL(where << " '" << text << "': the activation storage must be f32 or bf16");
}

void ResNet18::set_activation_dtype(DType dtype) {
  AE_CHECK(dtype == DType::f32 || dtype == DType::bf16,
           "ResNet18.set_activation_dtype: " << dtype_name(dtype) << " must be f32 or bf16");
  activation_dtype_ = dtype;
  for (auto& block : blocks_) block->activation_dtype = dtype;
}

void ResNet18::set_fuse_training_epilogues(bool on) {
  fuse_training_epilogues_ = on;
  for (auto& block : blocks_) block->fuse_training_epilogues = on;
}

Tensor ResNet18::forward(const Tensor& x) {
  AE_CHECK(x.defined() && x.ndim() == 4 && x.dim(3) == 3 && x.dtype() == DType::f32,
           "ResNet18.forward: input " << x.desc() << " must be NHWC [N,H,W,3] f32");
  const bool keep = grad_enabled_;
  const bool backbone_training = training_ && !backbone_bn_eval_;
  // Inference: the stem convolution, BatchNorm and ReLU as one op (ops::conv2d_batchnorm), so the
  // stem holds one buffer of its output size rather than three (the largest activation of the network).
  // Training: the stem convolution with its training BatchNorm and ReLU as one op as well
  // (ops::conv2d_batchnorm_train; BasicBlock::fuse_training_epilogues says what that changes).
  // (A temporary: inference frees the stem's output, the largest activation, once it is pooled.)
  const auto stem = [&] {
    if (!keep && !backbone_training) {
      return conv1_.forward_batchnorm(x, bn1_, Tensor(), /*relu=*/true, nullptr, activation_dtype_);
    }
    if (backbone_training && fuse_training_epilogues_) {
      Tensor y = conv1_.forward_batchnorm_train(x, bn1_, Tensor(), /*relu=*/true, keep, activation_dtype_);
      relu_.adopt_output(y, keep);
      return y;
    }
    return relu_.forward(bn1_.forward(conv1_.forward(x, keep), backbone_training, keep), keep);
  };
  Tensor h = maxpool_.forward(stem(), keep);
  for (auto& block : blocks_) h = block->forward(h, backbone_training, keep);
  Tensor y = fc_.forward(avgpool_.forward(h, keep), keep);
  if (config_.head == HeadType::seed) y = head_forward(y, keep);
  if (training_) ++dropout_step_;
  kept_ = keep;
  return y;
}

Tensor ResNet18::head_forward(const Tensor& features, bool keep) {
  // Each training forward draws fresh masks: the stream offset moves by 2^32 per step.
  // The mask of element i of a [B, F] input is keyed by offset + i; a data-parallel rank's rows
  // start at global row dropout_first_row_, so its elements move by that many rows of F.
  // With a device offset installed, the step's part of the offset is read from it instead.
  const Tensor& device_offset = dropout_device_offset_;
  auto offset = [&](const Tensor& x) {
    const uint64_t rows = static_cast<uint64_t>(dropout_first_row_ * x.dim(-1));
    return device_offset.defined() ? rows : static_cast<uint64_t>(dropout_step_offset(dropout_step_)) + rows;
  };
  Tensor h = head1_.forward(head0_.forward(features, keep), keep);
  h = head3_.forward(head2_.forward(h, training_, mix(config_.seed, 1002), offset(h), keep, device_offset), training_,
                     keep);
  h = head5_.forward(head4_.forward(h, keep), keep);
  h = head7_.forward(head6_.forward(h, training_, mix(config_.seed, 1006), offset(h), keep, device_offset), training_,
                     keep);
  return head8_.forward(h, keep);
}

Tensor ResNet18::head_backward(const Tensor& dy, bool need_dx) {
  Tensor d = head7_.backward(head8_.backward(dy, true), true);
  d = head3_.backward(head4_.backward(head5_.backward(head6_.backward(d, true), true), true), true);
  d = head1_.backward(head2_.backward(d, true), true);
  return head0_.backward(d, need_dx);
}

int ResNet18::first_stage_needing_grad(bool need_input_grad) const {
  if (need_input_grad) return 0;
  std::vector<StateEntry> entries;
  auto any_trainable = [&entries]() {
    for (const StateEntry& e : entries)
      if (e.param != nullptr && e.param->trainable) return true;
    return false;
  };
  // list_state only records pointers; the const_cast never writes.
  auto* self = const_cast<ResNet18*>(this);
  self->conv1_.list_state("", entries);
  self->bn1_.list_state("", entries);
  if (any_trainable()) return 0;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    entries.clear();
    blocks_[i]->list_state("", entries);
    if (any_trainable()) return static_cast<int>(i) + 1;
  }
  if (self->fc_.weight.trainable || self->fc_.bias.trainable) return kClassifierStage;
  return kHeadOnly;
}

Tensor ResNet18::backward(const Tensor& dout, bool need_input_grad) {
  AE_CHECK(kept_, "ResNet18.backward: no activations kept; call forward with grad enabled first, once per backward");
  kept_ = false;
  const int first = first_stage_needing_grad(need_input_grad);
  Tensor d = dout;
  if (config_.head == HeadType::seed) {
    d = head_backward(d, first < kHeadOnly);
    if (first >= kHeadOnly) return Tensor();
  }
  d = fc_.backward(d, first < kClassifierStage);
  if (first >= kClassifierStage) return Tensor();
  d = avgpool_.backward(d, true);
  for (int stage = static_cast<int>(blocks_.size()); stage >= std::max(first, 1); --stage) {
    d = blocks_[static_cast<std::size_t>(stage - 1)]->backward(d, stage > first);
  }
  if (first > 0) return Tensor();
  d = bn1_.backward_through_relu(maxpool_.backward(d, true), relu_.take_output(), true);
  return conv1_.backward(d, need_input_grad);
}

// ---------------------------------------------------------------- input gradient

namespace {

// dx of an eval BatchNorm, dy * gamma / sqrt(var + eps): the same fused op with mean 0 and beta 0.
Tensor eval_bn_backward(const BatchNorm& bn, const Tensor& dy) {
  ops::BatchNormApplyParams p;
  p.eps = bn.params.eps;
  p.stats = ops::BatchNormStats::running;
  const Tensor zero = Tensor::zeros(bn.bias.value.shape(), DType::f32, bn.bias.value.device());
  return ops::batchnorm_apply(p, dy, bn.weight.value, zero, zero, bn.running_var, Tensor());
}

Tensor linear_dx(const Linear& l, const Tensor& x, const Tensor& dy) {
  // linear_backward also forms dW and dbias (never stored): the head is 0.3 M parameters, a few
  // microseconds next to the backbone's convolutions.
  return ops::linear_backward(x, l.weight.value, dy, /*has_bias=*/true, /*need_dx=*/true).dx;
}

}  // namespace

ResNet18::InputGradient ResNet18::input_gradient(const Tensor& x, const Tensor& dscore) {
  AE_CHECK(x.defined() && x.ndim() == 4 && x.dim(3) == 3 && x.dtype() == DType::f32,
           "ResNet18.input_gradient: input " << x.desc() << " must be NHWC [N,H,W,3] f32");
  // ---- forward (eval), keeping what dx needs
  const Tensor stem_relu = conv1_.forward_batchnorm(x, bn1_, Tensor(), /*relu=*/true, nullptr, activation_dtype_);
  const ops::MaxPoolOut pooled = ops::maxpool2d_forward(maxpool_.params, stem_relu);
  std::vector<BasicBlock::InputGradTape> tapes(blocks_.size());
  Tensor h = pooled.y;
  for (std::size_t i = 0; i < blocks_.size(); ++i) h = blocks_[i]->forward_for_input_grad(h, tapes[i]);
  const Shape h_shape = h.shape();
  const Tensor features = ops::adaptive_avgpool2d_forward(ops::AdaptiveAvgPool2dParams{}, h).reshape({h.dim(0), h.dim(3)});
  const Tensor logits = ops::linear_forward(features, fc_.weight.value, fc_.bias.value);
  Tensor score = logits;
  Tensor h0, p1, b3, h4, p5, b7;
  if (config_.head == HeadType::seed) {  // dropout is the identity in eval mode
    h0 = ops::linear_forward(logits, head0_.weight.value, head0_.bias.value);
    p1 = ops::prelu_forward(h0, head1_.weight.value);
    b3 = eval_bn(head3_, p1, false);
    h4 = ops::linear_forward(b3, head4_.weight.value, head4_.bias.value);
    p5 = ops::prelu_forward(h4, head5_.weight.value);
    b7 = eval_bn(head7_, p5, false);
    score = ops::linear_forward(b7, head8_.weight.value, head8_.bias.value);
  }
  Tensor d = dscore.defined() ? dscore : Tensor::full(score.shape(), 1.0f).to(score.device());
  AE_CHECK(d.shape() == score.shape(), "ResNet18.input_gradient: dscore " << d.desc() << " does not match the score "
                                                                          << score.desc());
  // ---- backward, dx only
  if (config_.head == HeadType::seed) {
    d = eval_bn_backward(head7_, linear_dx(head8_, b7, d));
    d = ops::prelu_backward(h4, head5_.weight.value, d).dx;
    d = eval_bn_backward(head3_, linear_dx(head4_, b3, d));
    d = ops::prelu_backward(h0, head1_.weight.value, d).dx;
    d = linear_dx(head0_, logits, d);
  }
  d = linear_dx(fc_, features, d);
  d = ops::adaptive_avgpool2d_backward(ops::AdaptiveAvgPool2dParams{}, d.reshape({h_shape[0], 1, 1, h_shape[3]}), h_shape);
  for (std::size_t i = blocks_.size(); i-- > 0;) d = blocks_[i]->backward_input_grad(d, tapes[i]);
  d = ops::maxpool2d_backward(maxpool_.params, d, pooled.argmax, stem_relu.shape());
  d = eval_bn_backward(bn1_, ops::relu_backward(stem_relu, d));
  return {score, ops::conv2d_backward_data(conv1_.params, d, conv1_.weight.value, x.shape())};
}

// ---------------------------------------------------------------- parameters and state

void ResNet18::set_trainable(ParamGroup group, bool on) {
  for (StateEntry& e : state_entries())
    if (e.param != nullptr && e.param->group == group) e.param->trainable = on;
}

bool ResNet18::trainable(ParamGroup group) const {
  for (StateEntry& e : const_cast<ResNet18*>(this)->state_entries())
    if (e.param != nullptr && e.param->group == group && e.param->trainable) return true;
  return false;
}

std::vector<const Tensor*> ResNet18::state_tensors() {
  std::vector<const Tensor*> out;
  for (const StateEntry& e : state_entries_for_reading()) {
    const Tensor* t = e.param != nullptr ? &e.param->value : e.buffer;
    if (t != nullptr) out.push_back(t);  // a host counter (num_batches_tracked) has no tensor
  }
  return out;
}

void ResNet18::zero_grad() {
  for (StateEntry& e : state_entries())
    if (e.param != nullptr) e.param->grad = Tensor();
}

std::vector<ParamRef> ResNet18::parameters() {
  std::vector<ParamRef> out;
  for (StateEntry& e : state_entries())
    if (e.param != nullptr) out.push_back(ParamRef{e.name, e.param});
  return out;
}

std::vector<ParamRef> ResNet18::trainable_parameters() {
  std::vector<ParamRef> out;
  for (ParamRef& r : parameters())
    if (r.param->trainable) out.push_back(r);
  return out;
}

int64_t ResNet18::parameter_count(ParamGroup group) {
  int64_t n = 0;
  for (ParamRef& r : parameters())
    if (r.param->group == group) n += r.param->value.numel();
  return n;
}

NamedTensors ResNet18::state_dict() {
  NamedTensors out;
  for (StateEntry& e : state_entries()) {
    if (e.param != nullptr) {
      const Tensor& v = e.param->value;
      out.emplace_back(e.name, e.conv_weight ? ohwi_to_oihw(v) : v.to(Device::cpu()).clone());
    } else if (e.buffer != nullptr) {
      out.emplace_back(e.name, e.buffer->to(Device::cpu()).clone());
    } else {
      Tensor n = Tensor::empty({}, DType::i64);
      *n.data<int64_t>() = *e.counter;
      out.emplace_back(e.name, n);
    }
  }
  return out;
}

void ResNet18::load_state_dict(const NamedTensors& tensors, const LoadOptions& options) {
  check_layout(tensors, config_.head, config_.adapters, options, "state dict");
  std::map<std::string, StateEntry> by_name;
  for (StateEntry& e : state_entries()) by_name[e.name] = e;
  for (const auto& [name, t] : tensors) {
    by_name.at(name).load_from_file(t);  // check_layout guarantees the name exists
  }
  kept_ = false;
}

NamedTensors ResNet18::grads_pytorch_layout() {
  NamedTensors out;
  for (StateEntry& e : state_entries()) {
    if (e.param == nullptr || !e.param->grad.defined()) continue;
    const Tensor& g = e.param->grad;
    out.emplace_back(e.name, e.conv_weight ? ohwi_to_oihw(g) : g.to(Device::cpu()));
  }
  return out;
}

void ResNet18::to(Device target) {
  for (StateEntry& e : state_entries()) {
    if (e.param != nullptr) {
      e.param->value = e.param->value.to(target);
      if (e.param->grad.defined()) e.param->grad = e.param->grad.to(target);
    } else if (e.buffer != nullptr) {
      *e.buffer = e.buffer->to(target);
    }
  }
  kept_ = false;
}

Device ResNet18::device() const { return conv1_.weight.value.device(); }

}  // namespace ae::model

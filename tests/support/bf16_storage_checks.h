#pragma once
// The bf16 activation storage of the ops that take it, checked the same way on every backend (the
// CPU in tests/unit/test_bf16_activations.cpp, the CUDA device in
// tests/gpu/test_cuda_bf16_activations.cpp): each op given bf16 inputs, or asked for a bf16 output,
// must give bit for bit what the same op computes on the same device in f32 from the exactly
// widened inputs, its output then rounded by ops::cast. So a bf16 path is the f32 path plus one
// rounding where a bf16 is stored, nothing else; the f32 paths have their own reference,
// finite-difference and cross-device tests. A check that the bf16 output differs from the f32 one
// somewhere proves the rounding really happened.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "model/resnet18.h"
#include "tests/support/check.h"
#include "tests/support/conv_bn_case.h"
#include "tests/support/expect.h"

namespace ae::test {

using ToDevice = std::function<Tensor(const Tensor&)>;

inline Tensor widen(const Tensor& t) { return ops::cast(t, DType::f32); }
inline Tensor to_bf16(const Tensor& t) { return ops::cast(t, DType::bf16); }

inline void check_bf16_batchnorm_apply(const ToDevice& dev, uint64_t seed) {
  for (const Shape& s : {Shape{2, 5, 7, 3}, Shape{1, 1, 1, 64}, Shape{2, 13, 11, 17}}) {
    const int64_t c = s.back();
    INFO("batchnorm_apply " << shape_str(s));
    const Tensor x = dev(random_tensor(s, seed, -3.0f, 3.0f));
    const Tensor gamma = dev(random_tensor({c}, seed + 1, 0.5f, 1.5f)), beta = dev(random_tensor({c}, seed + 2));
    const Tensor mean = dev(random_tensor({c}, seed + 3)), var = dev(random_tensor({c}, seed + 4, 0.1f, 2.0f));
    const Tensor r_bf16 = to_bf16(dev(random_tensor(s, seed + 5)));
    seed += 6;
    for (bool relu : {false, true}) {
      ops::BatchNormApplyParams p;
      p.relu = relu;
      const Tensor f32_out = ops::batchnorm_apply(p, x, gamma, beta, mean, var, widen(r_bf16));
      // A bf16 residual is widened as it is read.
      CHECK(bitwise_equal(ops::batchnorm_apply(p, x, gamma, beta, mean, var, r_bf16), f32_out));
      ops::BatchNormApplyParams pb = p;
      pb.out_dtype = DType::bf16;
      pb.in_place = true;  // ignored for a bf16 y: x must survive
      const Tensor x_before = x.clone();
      const Tensor y = ops::batchnorm_apply(pb, x, gamma, beta, mean, var, r_bf16);
      CHECK(y.dtype() == DType::bf16);
      CHECK(y.device() == x.device());
      CHECK(bitwise_equal(y, to_bf16(f32_out)));
      CHECK(bitwise_equal(x, x_before));
      CHECK_FALSE(bitwise_equal(widen(y), f32_out));  // the rounding happened
      CHECK(bitwise_equal(ops::batchnorm_apply(pb, x, gamma, beta, mean, var, Tensor()),
                          to_bf16(ops::batchnorm_apply(p, x, gamma, beta, mean, var, Tensor()))));
    }
  }
}

inline void check_bf16_conv_batchnorm(const ToDevice& dev, uint64_t seed) {
  for (const ConvBnCase& k : kConvBnCases) {
    INFO("conv2d_batchnorm(_train) x " << shape_str(k.x) << " o " << k.o);
    const ConvBnInputs in = random_conv_bn_inputs(k, seed);
    seed += 7;
    const Tensor xb = to_bf16(dev(in.x)), wb = to_bf16(dev(in.w)), rb = to_bf16(dev(in.residual));
    const Tensor gamma = dev(in.gamma), beta = dev(in.beta), mean = dev(in.mean), var = dev(in.var);
    // Inference.
    ops::BatchNormApplyParams p;
    p.relu = true;
    const Tensor f32_y = ops::conv2d_batchnorm(k.p, p, widen(xb), widen(wb), gamma, beta, mean, var, widen(rb));
    ops::BatchNormApplyParams pb = p;
    pb.out_dtype = DType::bf16;
    const Tensor y = ops::conv2d_batchnorm(k.p, pb, xb, wb, gamma, beta, mean, var, rb);
    CHECK(y.dtype() == DType::bf16);
    CHECK(bitwise_equal(y, to_bf16(f32_y)));
    CHECK(bitwise_equal(ops::conv2d_batchnorm(k.p, p, xb, wb, gamma, beta, mean, var, rb), f32_y));
    // Training: conv and the statistics are the f32 op's, y is rounded once.
    const ops::BatchNormParams bn;
    for (bool relu : {false, true}) {
      Tensor rm1 = mean.clone(), rv1 = var.clone(), rm2 = mean.clone(), rv2 = var.clone();
      const ops::ConvBatchNormTrainOut f =
          ops::conv2d_batchnorm_train(k.p, bn, relu, widen(xb), widen(wb), gamma, beta, rm1, rv1, widen(rb));
      const ops::ConvBatchNormTrainOut b =
          ops::conv2d_batchnorm_train(k.p, bn, relu, xb, wb, gamma, beta, rm2, rv2, rb, DType::bf16);
      CHECK(b.y.dtype() == DType::bf16);
      CHECK(bitwise_equal(b.y, to_bf16(f.y)));
      CHECK(bitwise_equal(b.conv, f.conv));
      CHECK(bitwise_equal(b.save_mean, f.save_mean));
      CHECK(bitwise_equal(b.save_invstd, f.save_invstd));
      CHECK(bitwise_equal(rm2, rm1));
      CHECK(bitwise_equal(rv2, rv1));
    }
  }
}

inline void check_bf16_backward_inputs(const ToDevice& dev, uint64_t seed) {
  const Shape s{2, 6, 5, 8};
  const int64_t c = s.back();
  // A stored ReLU output: positive and zero values, and positive values too small for bf16 (they
  // are stored as +0, so their gradient is dropped, as the next layer read 0).
  Tensor y_host = random_tensor(s, seed, -1.0f, 1.0f);
  for (int64_t i = 0; i < y_host.numel(); ++i) {
    float& v = y_host.f32()[i];
    v = v > 0.0f ? v : 0.0f;
    if (i % 7 == 0) v = 1e-41f;
  }
  const Tensor yb = to_bf16(dev(y_host));
  const Tensor dy = dev(random_tensor(s, seed + 1));
  const Tensor relu_dx = ops::relu_backward(yb, dy);
  CHECK(bitwise_equal(relu_dx, ops::relu_backward(widen(yb), dy)));
  CHECK_FALSE(bitwise_equal(relu_dx, ops::relu_backward(dev(y_host), dy)));  // 1e-41 is stored as 0
  // batchnorm_backward_train's relu_y.
  const Tensor x = dev(random_tensor(s, seed + 2, -2.0f, 2.0f));
  const Tensor gamma = dev(random_tensor({c}, seed + 3, 0.5f, 1.5f)), beta = dev(random_tensor({c}, seed + 4));
  Tensor rm = dev(Tensor::zeros({c})), rv = dev(Tensor::full({c}, 1.0f));
  const ops::BatchNormTrainOut fwd = ops::batchnorm_forward_train({}, x, gamma, beta, rm, rv);
  const ops::BatchNormGrads gb = ops::batchnorm_backward_train(x, dy, gamma, fwd.save_mean, fwd.save_invstd, yb);
  const ops::BatchNormGrads gf =
      ops::batchnorm_backward_train(x, dy, gamma, fwd.save_mean, fwd.save_invstd, widen(yb));
  CHECK(bitwise_equal(gb.dx, gf.dx));
  CHECK(bitwise_equal(gb.dgamma, gf.dgamma));
  CHECK(bitwise_equal(gb.dbeta, gf.dbeta));
  // conv2d_backward_weight of a bf16 x.
  const ops::Conv2dParams p{3, 3, 2, 2, 1, 1};
  const Tensor xb = to_bf16(dev(random_tensor(s, seed + 5)));
  const Tensor dyc = dev(random_tensor({2, 3, 3, 4}, seed + 6));
  CHECK(bitwise_equal(ops::conv2d_backward_weight(p, xb, dyc, {4, 3, 3, c}),
                      ops::conv2d_backward_weight(p, widen(xb), dyc, {4, 3, 3, c})));
}

inline void check_bf16_pooling(const ToDevice& dev, uint64_t seed) {
  for (const Shape& s : {Shape{2, 9, 9, 5}, Shape{1, 4, 7, 16}}) {
    INFO("pooling " << shape_str(s));
    const Tensor xb = to_bf16(dev(random_tensor(s, seed++, -2.0f, 2.0f)));
    ops::MaxPool2dParams mp;
    const ops::MaxPoolOut b = ops::maxpool2d_forward(mp, xb);
    const ops::MaxPoolOut f = ops::maxpool2d_forward(mp, widen(xb));
    CHECK(b.y.dtype() == DType::bf16);
    CHECK(bitwise_equal(widen(b.y), f.y));  // the maximum is one of the inputs: exact
    CHECK(bitwise_equal(b.argmax, f.argmax));
    mp.with_argmax = false;
    CHECK(bitwise_equal(ops::maxpool2d_forward(mp, xb).y, b.y));
    for (const ops::AdaptiveAvgPool2dParams ap : {ops::AdaptiveAvgPool2dParams{1, 1}, ops::AdaptiveAvgPool2dParams{2, 3}}) {
      const Tensor a = ops::adaptive_avgpool2d_forward(ap, xb);
      CHECK(a.dtype() == DType::f32);
      CHECK(bitwise_equal(a, ops::adaptive_avgpool2d_forward(ap, widen(xb))));
    }
  }
}

// What still refuses bf16, by name.
inline void check_bf16_refusals(const ToDevice& dev) {
  const Tensor xb = to_bf16(dev(random_tensor({2, 3, 3, 4}, 1)));
  const Tensor c4 = dev(Tensor::full({4}, 1.0f));
  ops::BatchNormApplyParams p;
  require_error([&] { ops::batchnorm_apply(p, xb, c4, c4, c4, c4, Tensor()); }, {"batchnorm_apply", "x", "bf16", "f32"});
  p.out_dtype = DType::i64;
  require_error([&] { ops::batchnorm_apply(p, widen(xb), c4, c4, c4, c4, Tensor()); },
                {"batchnorm_apply", "out_dtype i64", "f32 or bf16"});
  require_error([&] { ops::relu_forward(xb); }, {"relu", "bf16", "f32"});
  require_error([&] { ops::add_relu(xb, xb); }, {"add_relu", "bf16", "f32"});
  require_error([&] { ops::relu_backward(xb, xb); }, {"relu_backward", "dy", "bf16", "f32"});
}

// ---- a ResNet-18 with bf16 activations against the same model with f32 ones --------------------

inline double cosine_similarity(const Tensor& a, const Tensor& b) {
  const std::vector<float> u = a.to_vector(), v = b.to_vector();
  double uv = 0, uu = 0, vv = 0;
  for (std::size_t i = 0; i < u.size(); ++i) {
    uv += static_cast<double>(u[i]) * v[i];
    uu += static_cast<double>(u[i]) * u[i];
    vv += static_cast<double>(v[i]) * v[i];
  }
  return uu > 0 && vv > 0 ? uv / std::sqrt(uu * vv) : (uu == vv ? 1.0 : 0.0);
}

// Relative distance max|a - b| / max|b|.
inline double max_relative(const Tensor& a, const Tensor& b) {
  const std::vector<float> u = a.to_vector(), v = b.to_vector();
  double d = 0, m = 0;
  for (std::size_t i = 0; i < u.size(); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(u[i]) - v[i]));
    m = std::max(m, std::fabs(static_cast<double>(v[i])));
  }
  return m > 0 ? d / m : d;
}

// How far one model's numbers are from a reference model's on the same batch.
struct ModelAgreement {
  double score_rel = 0, train_out_rel = 0;  // eval scores, training-step outputs: max|a-b| / max|b|
  double grad_cosine = 0;                   // over the concatenation of every parameter gradient
  double input_grad_cosine = 0;
  bool scores_differ = false;
  int grads = 0;  // parameters with a gradient after the training step
};

// `m` against `ref`, each given its own input (so the input may be perturbed): eval scores, one
// training step's output and parameter gradients, and the input gradient.
inline ModelAgreement model_agreement(model::ResNet18& ref, const Tensor& x_ref, model::ResNet18& m, const Tensor& x,
                                      const Tensor& target) {
  ModelAgreement a;
  for (model::ResNet18* r : {&ref, &m}) {
    r->set_training(false);
    r->set_grad_enabled(false);
  }
  const Tensor s_ref = ref.forward(x_ref), s = m.forward(x);
  a.score_rel = max_relative(s, s_ref);
  a.scores_differ = !bitwise_equal(s, s_ref);
  std::vector<Tensor> g_ref, g;
  Tensor o_ref, o;
  for (model::ResNet18* r : {&ref, &m}) {
    r->set_training(true);
    r->set_grad_enabled(true);
    const Tensor out = r->forward(r == &ref ? x_ref : x);
    r->backward(ops::mse_loss_backward(out, target));
    (r == &ref ? o_ref : o) = out;
    for (model::ParamRef& p : r->parameters())
      if (p.param->grad.defined()) (r == &ref ? g_ref : g).push_back(p.param->grad.reshape({p.param->grad.numel()}));
  }
  a.train_out_rel = max_relative(o, o_ref);
  REQUIRE(g.size() == g_ref.size());
  a.grads = static_cast<int>(g.size());
  double uv = 0, uu = 0, vv = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const std::vector<float> u = g[i].to_vector(), v = g_ref[i].to_vector();
    for (std::size_t j = 0; j < u.size(); ++j) {
      uv += static_cast<double>(u[j]) * v[j];
      uu += static_cast<double>(u[j]) * u[j];
      vv += static_cast<double>(v[j]) * v[j];
    }
  }
  a.grad_cosine = uv / std::sqrt(uu * vv);
  for (model::ResNet18* r : {&ref, &m}) {
    r->set_training(false);
    r->zero_grad();
  }
  a.input_grad_cosine = cosine_similarity(m.input_gradient(x).dx, ref.input_gradient(x_ref).dx);
  return a;
}

struct Bf16ModelAgreement {
  ModelAgreement bf16;     // the model storing bf16 activations, same input
  ModelAgreement control;  // an f32 model whose input alone was moved by a bf16 ulp's order
  int params = 0;
};

// A randomly initialised ResNet-18 (linear head, dropout off; adapters randomised when asked)
// storing f32 activations is the reference; the same weights storing bf16 activations are compared
// with it, and so is the f32 model given its input moved by about one bf16 rounding (each element
// times 1 +- 2^-8, random signs; a perturbation the bf16 conv math does not erase, as it would
// the input's own rounding). The control says how much one bf16-sized error moves these numbers:
// a random network training with BatchNorm over a few images is sensitive (the input's error alone
// turns the gradient by a few degrees), so a tolerance fixed in advance would be either loose or
// flaky, while a bf16 model that rounds at every layer must stay within a small multiple of one
// such error. A mistake in the plumbing (a residual or ReLU mask lost, a stale or wrong-dtype
// buffer) moves them by far more: a ReLU mask that let every gradient through took the gradient
// cosine from 0.96 to 0.07.
//
// The control is a property of the network and the batch, so it is computed on the CPU for every
// device (the emulated device then runs two models, not four).
inline Bf16ModelAgreement bf16_model_agreement(Device device, bool adapters, uint64_t seed,
                                               Shape x_shape = {8, 64, 64, 3}) {
  model::ModelConfig c;
  c.head = model::HeadType::linear;
  c.adapters = adapters;
  c.seed = seed;
  c.dropout = 0.0f;
  // A fresh reference for each comparison: a training step moves the running statistics.
  const auto build = [&](DType activations, Device on) {
    auto m = std::make_unique<model::ResNet18>(c);
    uint64_t s = seed + 100;
    for (const model::ParamRef& r : m->parameters())
      if (adapters && r.param->group == model::ParamGroup::adapters)
        r.param->value.copy_from(random_tensor(r.param->value.shape(), s++, -0.05f, 0.05f));
    m->to(on);
    m->set_activation_dtype(activations);
    REQUIRE(m->activation_dtype() == activations);
    return m;
  };
  const Tensor x = random_tensor(x_shape, seed + 1);
  Tensor x_moved = x.clone();
  const Tensor signs = random_tensor(x_shape, seed + 3);
  for (int64_t i = 0; i < x_moved.numel(); ++i)
    x_moved.f32()[i] *= signs.f32()[i] > 0.0f ? 1.0f + 0x1p-8f : 1.0f - 0x1p-8f;
  const Tensor target = random_tensor({x_shape[0], 1}, seed + 2);
  const Tensor x_dev = x.to(device), target_dev = target.to(device);
  Bf16ModelAgreement a;
  a.bf16 = model_agreement(*build(DType::f32, device), x_dev, *build(DType::bf16, device), x_dev, target_dev);
  const Device cpu = Device::cpu();
  a.control = model_agreement(*build(DType::f32, cpu), x, *build(DType::f32, cpu), x_moved, target);
  a.params = static_cast<int>(build(DType::f32, cpu)->parameters().size());
  return a;
}

// The checks both backends' tests make of bf16_model_agreement, with what they saw.
inline void check_bf16_model_agreement(const Bf16ModelAgreement& a) {
  const ModelAgreement &b = a.bf16, &c = a.control;
  MESSAGE("bf16 storage (control: f32 storage, input moved by 2^-8): score rel "
          << b.score_rel << " (" << c.score_rel << "), train out rel " << b.train_out_rel << " (" << c.train_out_rel
          << "), grad cosine " << b.grad_cosine << " (" << c.grad_cosine << ") over " << b.grads
          << " tensors, input grad cosine " << b.input_grad_cosine << " (" << c.input_grad_cosine << ")");
  CHECK(b.scores_differ);  // bf16 really was stored
  CHECK(b.grads == a.params);
  // Evaluation with running statistics is well conditioned: bf16 storage rounds every layer's
  // output (about 2^-9 relative each), seen: under 4 % of the largest score.
  CHECK(b.score_rel < 0.05);
  // Training over a few images is not, so these bounds are loose (seen at batch 8, 64 px: cosines
  // 0.96 and 0.97; at batch 4, 32 px: 0.75 and 0.96, the control 0.83 and 0.97) and the real
  // check is against the control: within a small multiple of one bf16-sized error (seen: 0.7 to
  // 3.6 times).
  CHECK(b.grad_cosine > 0.5);
  CHECK(b.input_grad_cosine > 0.8);
  constexpr double kRoundings = 5.0;
  CHECK(b.train_out_rel < kRoundings * c.train_out_rel + 1e-4);
  CHECK(1.0 - b.grad_cosine < kRoundings * (1.0 - c.grad_cosine) + 1e-4);
  CHECK(1.0 - b.input_grad_cosine < kRoundings * (1.0 - c.input_grad_cosine) + 1e-4);
}

}  // namespace ae::test

// Optimiser steps (kernels/optimizer.cpp, kernels/cpu/optimizer_cpu.cpp): SGD and Adam/AdamW
// against the torch.optim formulas evaluated in double, against literal numbers produced by
// PyTorch 1.13 itself, and argument validation.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using ae::test::require_error;

namespace {

// torch.optim.SGD in double (the formula of kernels/ops.h).
struct SgdReference {
  ops::SgdParams p;
  std::vector<double> param, buf;
  void step(const std::vector<double>& grad, int64_t t) {
    for (std::size_t i = 0; i < param.size(); ++i) {
      double g = grad[i] + double(p.weight_decay) * param[i];
      if (p.momentum != 0) {
        buf[i] = t == 1 ? g : double(p.momentum) * buf[i] + (1 - double(p.dampening)) * g;
        g = p.nesterov ? g + double(p.momentum) * buf[i] : buf[i];
      }
      param[i] -= double(p.lr) * g;
    }
  }
};

// torch.optim.Adam / AdamW in double.
struct AdamReference {
  ops::AdamParams p;
  std::vector<double> param, m, v;
  void step(const std::vector<double>& grad, int64_t t) {
    const double b1 = p.beta1, b2 = p.beta2, lr = p.lr, wd = p.weight_decay;
    for (std::size_t i = 0; i < param.size(); ++i) {
      double g = grad[i];
      if (p.decoupled) {
        param[i] *= 1 - lr * wd;
      } else {
        g += wd * param[i];
      }
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, double(t))) + double(p.eps);
      param[i] -= lr / (1 - std::pow(b1, double(t))) * m[i] / denom;
    }
  }
};

const test::Tolerance kStepTol{1e-6, 1e-5, 1e-10};

void check_sgd_against_reference(const ops::SgdParams& p, const Shape& shape) {
  Tensor param = test::random_tensor(shape, 1, -2, 2);
  Tensor buf = Tensor::zeros(shape);
  SgdReference ref{p, test::to_double(param), std::vector<double>(param.numel(), 0.0)};
  for (int64_t t = 1; t <= 4; ++t) {
    Tensor grad = test::random_tensor(shape, 100 + t);
    ops::sgd_step(p, param, grad, buf, t);
    ref.step(test::to_double(grad), t);
    AE_REQUIRE_OK(test::compare(param, ref.param, kStepTol, "sgd param step " + std::to_string(t)));
    if (p.momentum != 0) AE_REQUIRE_OK(test::compare(buf, ref.buf, kStepTol, "sgd buffer step " + std::to_string(t)));
  }
}

void check_adam_against_reference(const ops::AdamParams& p, const Shape& shape) {
  Tensor param = test::random_tensor(shape, 2, -2, 2);
  Tensor m = Tensor::zeros(shape), v = Tensor::zeros(shape);
  const std::vector<double> zero(param.numel(), 0.0);
  AdamReference ref{p, test::to_double(param), zero, zero};
  for (int64_t t = 1; t <= 5; ++t) {
    Tensor grad = test::random_tensor(shape, 200 + t);
    ops::adam_step(p, param, grad, m, v, t);
    ref.step(test::to_double(grad), t);
    AE_REQUIRE_OK(test::compare(param, ref.param, kStepTol, "adam param step " + std::to_string(t)));
    AE_REQUIRE_OK(test::compare(m, ref.m, kStepTol, "adam m step " + std::to_string(t)));
    AE_REQUIRE_OK(test::compare(v, ref.v, {1e-9, 1e-5, 1e-10}, "adam v step " + std::to_string(t)));
  }
}

// The fixture of the PyTorch numbers below (see the snippet with them).
const std::vector<float> kP0{0.5f, -1.25f, 2.0f, 0.0f, -0.1f, 3.75f, -2.5f, 0.125f, 1.0f, -0.3f, 0.7f};
const std::vector<std::vector<float>> kGrads{
    {0.1f, -0.2f, 0.3f, 0.05f, -1.0f, 0.0f, 2.5f, -0.01f, 0.4f, 0.6f, -0.7f},
    {-0.3f, 0.25f, 0.1f, -0.05f, 0.9f, 0.2f, -1.5f, 0.02f, -0.4f, 0.1f, 0.3f},
    {0.2f, 0.0f, -0.6f, 0.15f, -0.2f, -0.1f, 0.5f, -0.03f, 0.8f, -0.9f, 0.05f}};

// Runs three steps of `step_fn` from kP0 with kGrads and compares every step with PyTorch.
template <typename StepFn>
void check_against_pytorch(const char* what, const std::vector<std::vector<float>>& expected, StepFn step_fn) {
  const int64_t n = static_cast<int64_t>(kP0.size());
  Tensor param = Tensor::from_vector({n}, kP0);
  for (int64_t t = 1; t <= 3; ++t) {
    Tensor grad = Tensor::from_vector({n}, kGrads[t - 1]);
    step_fn(param, grad, t);
    const std::vector<double> want(expected[t - 1].begin(), expected[t - 1].end());
    // The same float operations in ATen's order (fused multiply-adds where ATen fuses): the
    // results must be bitwise equal, so the tolerance is zero.
    AE_REQUIRE_OK(test::compare(param, want, {0, 0, 0}, std::string(what) + " step " + std::to_string(t)));
  }
}

}  // namespace

TEST_CASE("sgd matches the torch.optim.SGD formula") {
  SUBCASE("plain") { check_sgd_against_reference({0.1f, 0.0f, 0.0f, 0.0f, false}, {7, 5}); }
  SUBCASE("weight decay") { check_sgd_against_reference({0.05f, 0.0f, 0.0f, 0.1f, false}, {13}); }
  SUBCASE("momentum") { check_sgd_against_reference({0.1f, 0.9f, 0.0f, 0.0f, false}, {64}); }
  SUBCASE("momentum with dampening and decay") { check_sgd_against_reference({0.1f, 0.8f, 0.3f, 0.01f, false}, {3, 17}); }
  SUBCASE("nesterov") { check_sgd_against_reference({0.1f, 0.9f, 0.0f, 1e-4f, true}, {1}); }
}

TEST_CASE("sgd without momentum accepts an undefined buffer") {
  Tensor param = Tensor::from_vector({2}, {1.0f, -2.0f});
  Tensor grad = Tensor::from_vector({2}, {0.5f, 0.25f});
  Tensor none;
  ops::sgd_step({0.1f}, param, grad, none, 1);
  AE_REQUIRE_OK(test::compare(param, std::vector<double>{0.95, -2.025}, kStepTol, "sgd"));
}

TEST_CASE("the first momentum step copies the gradient into the buffer whatever it held") {
  // PyTorch has no buffer before step 1; a stale buffer must not leak into the first step.
  Tensor param = Tensor::from_vector({2}, {1.0f, 1.0f});
  Tensor grad = Tensor::from_vector({2}, {0.5f, -0.5f});
  Tensor buf = Tensor::full({2}, 7.0f);
  ops::sgd_step({0.1f, 0.9f, 0.5f, 0.0f, false}, param, grad, buf, 1);
  AE_REQUIRE_OK(test::compare(buf, std::vector<double>{0.5, -0.5}, kStepTol, "buffer"));
  AE_REQUIRE_OK(test::compare(param, std::vector<double>{0.95, 1.05}, kStepTol, "param"));
}

TEST_CASE("adam and adamw match the torch.optim formulas") {
  SUBCASE("adam") { check_adam_against_reference({1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, false}, {7, 5}); }
  SUBCASE("adam with L2 decay") { check_adam_against_reference({1e-2f, 0.8f, 0.99f, 1e-6f, 0.05f, false}, {13, 17}); }
  SUBCASE("adamw") { check_adam_against_reference({1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, true}, {64}); }
  SUBCASE("adamw large eps") { check_adam_against_reference({3e-3f, 0.5f, 0.9f, 0.1f, 0.2f, true}, {1}); }
}

TEST_CASE("adam leaves a parameter with zero gradient and zero state where it is") {
  Tensor param = Tensor::from_vector({3}, {1.0f, -1.0f, 0.5f});
  Tensor grad = Tensor::zeros({3});
  Tensor m = Tensor::zeros({3}), v = Tensor::zeros({3});
  ops::adam_step({}, param, grad, m, v, 1);
  AE_REQUIRE_OK(test::compare(param, std::vector<double>{1.0, -1.0, 0.5}, {0, 0, 0}, "param"));
}

// Expected values generated once with Debian's PyTorch 1.13 (/usr/bin/python3):
//
//   import torch
//   f32 = lambda x: torch.tensor(x, dtype=torch.float32).item()  # hyper-parameters as float32 values
//   p0 = [0.5, -1.25, 2.0, 0.0, -0.1, 3.75, -2.5, 0.125, 1.0, -0.3, 0.7]
//   g = [[0.1, -0.2, 0.3, 0.05, -1.0, 0.0, 2.5, -0.01, 0.4, 0.6, -0.7],
//        [-0.3, 0.25, 0.1, -0.05, 0.9, 0.2, -1.5, 0.02, -0.4, 0.1, 0.3],
//        [0.2, 0.0, -0.6, 0.15, -0.2, -0.1, 0.5, -0.03, 0.8, -0.9, 0.05]]
//   def run(make):
//       p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
//       opt = make([p])
//       for t in range(3):
//           p.grad = torch.tensor(g[t], dtype=torch.float32)
//           opt.step()
//           print("  {" + ", ".join("%.9gf" % x for x in p.detach().tolist()) + "},")
//   run(lambda ps: torch.optim.Adam(ps, lr=f32(0.01), betas=(f32(0.9), f32(0.999)), eps=f32(1e-8)))
//   run(lambda ps: torch.optim.Adam(ps, lr=f32(0.01), betas=(f32(0.9), f32(0.999)), eps=f32(1e-8),
//                                   weight_decay=f32(0.01)))
//   run(lambda ps: torch.optim.AdamW(ps, lr=f32(0.01), betas=(f32(0.9), f32(0.999)), eps=f32(1e-8),
//                                    weight_decay=f32(0.01)))
//   run(lambda ps: torch.optim.SGD(ps, lr=f32(0.1), momentum=f32(0.9), weight_decay=f32(0.01), nesterov=True))
//
// The hyper-parameters are passed as float32 values because ours are floats: PyTorch then
// derives its double scalars (1 - beta, lr / bias correction, ...) from the same numbers we do.
TEST_CASE("optimisers reproduce PyTorch 1.13 numbers") {
  const int64_t n = static_cast<int64_t>(kP0.size());
  SUBCASE("adam") {
    Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
    check_against_pytorch(
        "adam",
        {{0.49000001f, -1.24000001f, 1.99000001f, -0.00999999698f, -0.0900000036f, 3.75f, -2.50999999f, 0.13499999f,
          0.99000001f, -0.310000002f, 0.709999979f},
         {0.49494192f, -1.24162734f, 1.98128939f, -0.00947368145f, -0.0900000036f, 3.74255872f, -2.51191497f,
          0.131338954f, 0.990526319f, -0.317833275f, 0.713225782f},
         {0.494754046f, -1.24288523f, 1.9838047f, -0.0150793828f, -0.0890599564f, 3.74027228f, -2.5144546f,
          0.134771362f, 0.985543907f, -0.315927327f, 0.715295076f}},
        [&](Tensor& p, const Tensor& g, int64_t t) { ops::adam_step({0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, false}, p, g, m, v, t); });
  }
  SUBCASE("adam with weight decay 0.01") {
    Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
    check_against_pytorch(
        "adam wd",
        {{0.49000001f, -1.24000001f, 1.99000001f, -0.00999999698f, -0.0900000036f, 3.74000001f, -2.50999999f,
          0.13499999f, 0.99000001f, -0.310000002f, 0.709999979f},
         {0.494765997f, -1.24108231f, 1.98111367f, -0.00946369208f, -0.0899900496f, 3.73160481f, -2.51179862f,
          0.130653888f, 0.990277529f, -0.317806751f, 0.713109374f},
         {0.494349301f, -1.24166954f, 1.9831357f, -0.0150641538f, -0.0890383497f, 3.72693849f, -2.5142014f,
          0.13352868f, 0.985162616f, -0.315852672f, 0.715025604f}},
        [&](Tensor& p, const Tensor& g, int64_t t) { ops::adam_step({0.01f, 0.9f, 0.999f, 1e-8f, 0.01f, false}, p, g, m, v, t); });
  }
  SUBCASE("adamw with weight decay 0.01") {
    Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
    check_against_pytorch(
        "adamw",
        {{0.489950001f, -1.23987496f, 1.98979998f, -0.00999999698f, -0.0899900049f, 3.74962497f, -2.50974989f,
          0.134987488f, 0.989899993f, -0.309969991f, 0.709929943f},
         {0.494842917f, -1.24137831f, 1.98089039f, -0.00947268121f, -0.0899810046f, 3.74180865f, -2.51141381f,
          0.131312951f, 0.990327299f, -0.317772269f, 0.713084757f},
         {0.494605541f, -1.24251199f, 1.98320758f, -0.0150774363f, -0.0890319571f, 3.7391479f, -2.51370215f,
          0.134732231f, 0.985245824f, -0.315834552f, 0.715082705f}},
        [&](Tensor& p, const Tensor& g, int64_t t) { ops::adam_step({0.01f, 0.9f, 0.999f, 1e-8f, 0.01f, true}, p, g, m, v, t); });
  }
  SUBCASE("sgd momentum 0.9, weight decay 0.01, nesterov") {
    Tensor buf = Tensor::zeros({n});
    check_against_pytorch(
        "sgd nesterov",
        {{0.480049998f, -1.20962501f, 1.93920004f, -0.00949999969f, 0.0901900083f, 3.7428751f, -2.97024989f,
          0.126662493f, 0.922100008f, -0.413430005f, 0.831669986f},
         {0.527632892f, -1.23761427f, 1.89059556f, -0.00403194968f, 9.96546441e-05f, 3.69472623f, -2.88008142f,
          0.123330586f, 0.963138044f, -0.480001479f, 0.829222798f},
         {0.504887044f, -1.23904181f, 1.9680047f, -0.0321115926f, 0.038099315f, 3.68474078f, -3.02613091f,
          0.127711535f, 0.811072171f, -0.359375894f, 0.843693316f}},
        [&](Tensor& p, const Tensor& g, int64_t t) { ops::sgd_step({0.1f, 0.9f, 0.0f, 0.01f, true}, p, g, buf, t); });
  }
}

TEST_CASE("optimiser argument errors name the op, the argument and the shapes") {
  Tensor param = Tensor::zeros({3, 4});
  Tensor grad = Tensor::zeros({3, 4});
  Tensor wrong = Tensor::zeros({4, 3});
  Tensor buf = Tensor::zeros({3, 4});
  Tensor m = Tensor::zeros({3, 4}), v = Tensor::zeros({3, 4});
  Tensor none;
  require_error([&] { ops::sgd_step({}, param, wrong, buf, 1); }, {"sgd_step", "grad", "[4,3]", "[3,4]"});
  require_error([&] { ops::sgd_step({0.1f, 0.9f}, param, grad, wrong, 1); }, {"sgd_step", "momentum_buf", "[4,3]"});
  require_error([&] { ops::sgd_step({0.1f, 0.9f}, param, grad, none, 1); }, {"sgd_step", "momentum_buf", "undefined"});
  require_error([&] { ops::sgd_step({0.1f, 0.0f, 0.0f, 0.0f, true}, param, grad, buf, 1); }, {"sgd_step", "nesterov"});
  require_error([&] { ops::sgd_step({-0.1f}, param, grad, buf, 1); }, {"sgd_step", "lr"});
  require_error([&] { ops::sgd_step({}, param, grad, buf, 0); }, {"sgd_step", "step 0"});
  require_error([&] { ops::adam_step({}, param, grad, wrong, v, 1); }, {"adam_step", "m", "[4,3]", "[3,4]"});
  require_error([&] { ops::adam_step({}, param, grad, m, wrong, 1); }, {"adam_step", "v", "[4,3]"});
  require_error([&] { ops::adam_step({}, param, wrong, m, v, 1); }, {"adam_step", "grad", "[4,3]"});
  ops::AdamParams bad_beta;
  bad_beta.beta2 = 1.0f;
  require_error([&] { ops::adam_step(bad_beta, param, grad, m, v, 1); }, {"adam_step", "beta2"});
  ops::AdamParams adamw;
  adamw.decoupled = true;
  require_error([&] { ops::adam_step(adamw, param, grad, m, v, -3); }, {"adamw_step", "step -3"});
  Tensor ints = Tensor::zeros({3, 4}, DType::i64);
  require_error([&] { ops::adam_step({}, param, ints, m, v, 1); }, {"adam_step", "grad", "f32"});
}

// ---------------------------------------------------------------- multi-tensor steps
namespace {

// Shapes of one parameter list: empty and one-element tensors among ordinary ones.
const std::vector<Shape> kMultiShapes = {{3, 5}, {0}, {1}, {64}, {2, 0, 3}, {7, 3, 3}, {1, 1}, {4099}};

// One copy of a parameter list with its optimiser state, plus the pointer lists the ops take.
struct ParamList {
  std::vector<Tensor> params, m, v;
  explicit ParamList(uint64_t seed) {
    for (const Shape& s : kMultiShapes) {
      params.push_back(test::random_tensor(s, seed++, -2, 2));
      m.push_back(Tensor::zeros(s));
      v.push_back(Tensor::zeros(s));
    }
  }
  static std::vector<Tensor*> pointers(std::vector<Tensor>& tensors) {
    std::vector<Tensor*> out;
    for (Tensor& t : tensors) out.push_back(&t);
    return out;
  }
};

std::vector<const Tensor*> const_pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> out;
  for (const Tensor& t : tensors) out.push_back(&t);
  return out;
}

std::vector<Tensor> step_grads(int64_t step) {
  std::vector<Tensor> grads;
  uint64_t seed = 1000 * static_cast<uint64_t>(step);
  for (const Shape& s : kMultiShapes) grads.push_back(test::random_tensor(s, seed++));
  return grads;
}

void require_lists_bitwise_equal(const std::vector<Tensor>& a, const std::vector<Tensor>& b, const std::string& what) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(what << "[" << i << "] shape " << shape_str(a[i].shape()));
    REQUIRE(test::bitwise_equal(a[i], b[i]));
  }
}

void check_adam_multi_equals_single(const ops::AdamParams& p) {
  ParamList single(7), multi(7);
  for (int64_t t = 1; t <= 4; ++t) {
    const std::vector<Tensor> grads = step_grads(t);
    for (std::size_t i = 0; i < grads.size(); ++i) {
      ops::adam_step(p, single.params[i], grads[i], single.m[i], single.v[i], t);
    }
    ops::adam_step_multi(p, ParamList::pointers(multi.params), const_pointers(grads), ParamList::pointers(multi.m),
                         ParamList::pointers(multi.v), t);
  }
  require_lists_bitwise_equal(multi.params, single.params, "param");
  require_lists_bitwise_equal(multi.m, single.m, "m");
  require_lists_bitwise_equal(multi.v, single.v, "v");
  // The step did something: a list left alone would also be "equal".
  CHECK_FALSE(test::bitwise_equal(multi.params[0], ParamList(7).params[0]));
}

void check_sgd_multi_equals_single(const ops::SgdParams& p) {
  ParamList single(9), multi(9);
  for (int64_t t = 1; t <= 4; ++t) {
    const std::vector<Tensor> grads = step_grads(t);
    for (std::size_t i = 0; i < grads.size(); ++i) ops::sgd_step(p, single.params[i], grads[i], single.m[i], t);
    ops::sgd_step_multi(p, ParamList::pointers(multi.params), const_pointers(grads), ParamList::pointers(multi.m), t);
  }
  require_lists_bitwise_equal(multi.params, single.params, "param");
  require_lists_bitwise_equal(multi.m, single.m, "momentum_buf");
  CHECK_FALSE(test::bitwise_equal(multi.params[0], ParamList(9).params[0]));
}

}  // namespace

TEST_CASE("adam_step_multi is bitwise adam_step on every tensor") {
  SUBCASE("adam") { check_adam_multi_equals_single({1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, false}); }
  SUBCASE("adam with L2 decay") { check_adam_multi_equals_single({1e-2f, 0.8f, 0.99f, 1e-6f, 0.05f, false}); }
  SUBCASE("adamw") { check_adam_multi_equals_single({1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, true}); }
}

TEST_CASE("sgd_step_multi is bitwise sgd_step on every tensor") {
  SUBCASE("plain") { check_sgd_multi_equals_single({0.1f, 0.0f, 0.0f, 0.0f, false}); }
  SUBCASE("momentum with dampening and decay") { check_sgd_multi_equals_single({0.1f, 0.8f, 0.3f, 0.01f, false}); }
  SUBCASE("nesterov") { check_sgd_multi_equals_single({0.1f, 0.9f, 0.0f, 1e-4f, true}); }
}

TEST_CASE("multi-tensor steps accept empty lists and undefined buffers without momentum") {
  ops::adam_step_multi({}, {}, {}, {}, {}, 1);
  ops::sgd_step_multi({}, {}, {}, {}, 1);
  Tensor param = Tensor::from_vector({2}, {1.0f, -2.0f});
  const Tensor grad = Tensor::from_vector({2}, {0.5f, 0.25f});
  Tensor none;
  ops::sgd_step_multi({0.1f}, {&param}, {&grad}, {&none}, 1);
  AE_REQUIRE_OK(test::compare(param, std::vector<double>{0.95, -2.025}, kStepTol, "sgd"));
}

TEST_CASE("multi-tensor step errors name the op, the list and the index") {
  Tensor p0 = Tensor::zeros({3, 4}), p1 = Tensor::zeros({5});
  Tensor g0 = Tensor::zeros({3, 4}), g1 = Tensor::zeros({5}), wrong = Tensor::zeros({4, 3});
  Tensor m0 = Tensor::zeros({3, 4}), m1 = Tensor::zeros({5}), v0 = Tensor::zeros({3, 4}), v1 = Tensor::zeros({5});
  Tensor ints = Tensor::zeros({5}, DType::i64);
  Tensor none;
  const std::vector<Tensor*> params{&p0, &p1}, m{&m0, &m1}, v{&v0, &v1};
  const std::vector<const Tensor*> grads{&g0, &g1};
  // Good lists pass.
  ops::adam_step_multi({}, params, grads, m, v, 1);
  ops::sgd_step_multi({0.1f, 0.9f}, params, grads, m, 1);

  require_error([&] { ops::adam_step_multi({}, params, {&g0, &wrong}, m, v, 1); },
                {"adam_step_multi", "grads[1]", "[4,3]", "[5]"});
  require_error([&] { ops::adam_step_multi({}, params, grads, {&m0, &wrong}, v, 1); },
                {"adam_step_multi", "m[1]", "[4,3]"});
  require_error([&] { ops::adam_step_multi({}, params, grads, m, {&wrong, &v1}, 1); },
                {"adam_step_multi", "v[0]", "[4,3]", "[3,4]"});
  require_error([&] { ops::adam_step_multi({}, {&p0, &ints}, grads, m, v, 1); }, {"adam_step_multi", "params[1]", "f32"});
  require_error([&] { ops::adam_step_multi({}, params, {&g0}, m, v, 1); }, {"adam_step_multi", "grads", "1 entries", "2"});
  require_error([&] { ops::adam_step_multi({}, params, grads, m, {&v0}, 1); }, {"adam_step_multi", "v", "1 entries"});
  require_error([&] { ops::adam_step_multi({}, params, {&g0, nullptr}, m, v, 1); }, {"adam_step_multi", "grads[1]", "null"});
  ops::AdamParams adamw;
  adamw.decoupled = true;
  require_error([&] { ops::adam_step_multi(adamw, params, grads, m, v, 0); }, {"adamw_step_multi", "step 0"});
  ops::AdamParams bad_beta;
  bad_beta.beta1 = -0.5f;
  require_error([&] { ops::adam_step_multi(bad_beta, params, grads, m, v, 1); }, {"adam_step_multi", "beta1"});

  require_error([&] { ops::sgd_step_multi({0.1f, 0.9f}, params, grads, {&m0, &none}, 1); },
                {"sgd_step_multi", "momentum_bufs[1]", "undefined"});
  require_error([&] { ops::sgd_step_multi({}, params, {&wrong, &g1}, m, 1); }, {"sgd_step_multi", "grads[0]", "[4,3]"});
  require_error([&] { ops::sgd_step_multi({}, params, grads, {&m0}, 1); }, {"sgd_step_multi", "momentum_bufs", "1 entries"});
  require_error([&] { ops::sgd_step_multi({0.1f, 0.0f, 0.0f, 0.0f, true}, params, grads, m, 1); },
                {"sgd_step_multi", "nesterov"});
}

TEST_CASE("a multi-tensor step that fails validation leaves every tensor untouched") {
  // Entry 0 is valid and would move; entry 1 is bad. Nothing may be stepped before all entries are checked.
  Tensor p0 = Tensor::full({4}, 1.0f), p1 = Tensor::zeros({5});
  const Tensor g0 = Tensor::full({4}, 0.5f), wrong = Tensor::zeros({4});
  Tensor m0 = Tensor::zeros({4}), m1 = Tensor::zeros({5}), v0 = Tensor::zeros({4}), v1 = Tensor::zeros({5});
  require_error([&] { ops::adam_step_multi({}, {&p0, &p1}, {&g0, &wrong}, {&m0, &m1}, {&v0, &v1}, 1); },
                {"adam_step_multi", "grads[1]"});
  require_error([&] { ops::sgd_step_multi({0.1f, 0.9f}, {&p0, &p1}, {&g0, &wrong}, {&m0, &m1}, 1); },
                {"sgd_step_multi", "grads[1]"});
  CHECK(p0.to_vector() == std::vector<float>(4, 1.0f));
  CHECK(m0.to_vector() == std::vector<float>(4, 0.0f));
  CHECK(v0.to_vector() == std::vector<float>(4, 0.0f));
}

// The input-gradient pass (ResNet18::input_gradient): the score of the inference path, the input
// gradient of the layer-by-layer backward to float rounding (BatchNorm folded into the backward
// weights), finite differences, and no parameter gradient or flag touched.
#include <doctest/doctest.h>

#include <cmath>

#include "model/shared_model.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;

namespace {

// A seed-head (or linear-head) model with adapters, BatchNorm and head moved away from their
// defaults, so that every folded scale and every adapter tap matters.
std::unique_ptr<model::ResNet18> perturbed_model(model::HeadType head, uint64_t seed) {
  model::ModelConfig cfg;
  cfg.head = head;
  cfg.adapters = true;
  cfg.seed = seed;
  auto net = std::make_unique<model::ResNet18>(cfg);
  for (const model::StateEntry& e : net->state_entries()) {
    if (e.counter != nullptr) continue;
    const bool positive = e.name.ends_with("running_var") || (e.param != nullptr && e.param->group == model::ParamGroup::bn_affine &&
                                                              e.name.ends_with(".weight"));
    Tensor& t = e.param != nullptr ? e.param->value : *e.buffer;
    if (positive)
      t.copy_from(test::random_tensor(t.shape(), ++seed, 0.6f, 1.4f));
    else if (e.param == nullptr || e.param->group != model::ParamGroup::backbone)
      t.copy_from(test::random_tensor(t.shape(), ++seed, -0.1f, 0.1f));
  }
  net->set_training(false);
  return net;
}

}  // namespace

TEST_CASE("input_gradient: the inference score and the layer backward's input gradient, no parameter touched") {
  for (model::HeadType head : {model::HeadType::seed, model::HeadType::linear}) {
    INFO("head " << model::head_name(head));
    auto net = perturbed_model(head, 40);
    const Tensor x = test::random_tensor({2, 37, 45, 3}, 1);  // odd sizes: every stride-2 edge case
    const Tensor dscore = test::random_tensor({2, 1}, 2);

    net->set_grad_enabled(false);
    const Tensor inference = net->forward(x);
    net->set_grad_enabled(true);
    const std::vector<bool> flags_before = [&] {
      std::vector<bool> f;
      for (auto& r : net->parameters()) f.push_back(r.param->trainable);
      return f;
    }();
    const model::ResNet18::InputGradient ig = net->input_gradient(x, dscore);
    CHECK(test::bitwise_equal(ig.score, inference));
    for (auto& r : net->parameters()) CHECK_FALSE(r.param->grad.defined());
    std::vector<bool> flags_after;
    for (auto& r : net->parameters()) flags_after.push_back(r.param->trainable);
    CHECK(flags_after == flags_before);

    // The layer-by-layer backward (unfolded BatchNorm), on a model whose parameters are all frozen.
    for (model::ParamGroup g : {model::ParamGroup::backbone, model::ParamGroup::bn_affine, model::ParamGroup::adapters,
                                model::ParamGroup::head})
      net->set_trainable(g, false);
    net->forward(x);
    const Tensor dx = net->backward(dscore, /*need_input_grad=*/true);
    // Folding changes the rounding only: measured max |diff| ~1e-7 of max |dx|.
    test::require_close(ig.dx, dx, {1e-6, 1e-4, 1e-10}, "input_gradient vs layer backward");
    CHECK_FALSE(test::bitwise_equal(ig.dx, Tensor::zeros(dx.shape())));
  }
}

TEST_CASE("input_gradient matches central finite differences of the score") {
  auto net = perturbed_model(model::HeadType::seed, 90);
  Tensor x = test::random_tensor({1, 24, 24, 3}, 3);
  const model::ResNet18::InputGradient ig = net->input_gradient(x);
  net->set_grad_enabled(false);
  const std::vector<double> numeric = test::numeric_gradient(
      x, [&] { return static_cast<double>(net->forward(x).item()); }, 1e-2, 96);
  const std::vector<float> analytic = ig.dx.to_vector();
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < numeric.size(); ++i) {
    err = std::max(err, std::abs(numeric[i] - analytic[i]));
    scale = std::max(scale, std::abs(numeric[i]));
  }
  INFO("max |numeric - analytic| " << err << " of max |grad| " << scale);
  CHECK(scale > 0);
  CHECK(err <= 0.05 * scale + 1e-4);  // f32 differences through ReLU/max-pool kinks
}

TEST_CASE("input_gradient follows a switch of person (the folded weights are rebuilt)") {
  model::ModelConfig cfg;
  cfg.seed = 3;
  model::ResNet18 generic(cfg);
  model::SharedModel shared(model::checkpoint_from_tensors(generic.state_dict(), "g"), Device::cpu(), "g");
  const Tensor x = test::random_tensor({1, 32, 32, 3}, 4);
  const Tensor g0 = shared.net().input_gradient(x).dx;
  auto user = shared.fresh_state(model::StateScope::user, "u");
  uint64_t seed = 77;
  for (auto& e : user->entries)
    if (!e.is_counter && e.name.find("adapter") != std::string::npos)
      e.value.copy_from(test::random_tensor(e.value.shape(), ++seed, -0.05f, 0.05f));
  shared.bind(user);
  const Tensor gu = shared.net().input_gradient(x).dx;
  CHECK_FALSE(test::bitwise_equal(gu, g0));
  // The layer backward of the same bound state agrees.
  model::ResNet18& net = shared.net();
  for (model::ParamGroup g : {model::ParamGroup::backbone, model::ParamGroup::bn_affine, model::ParamGroup::adapters,
                              model::ParamGroup::head})
    net.set_trainable(g, false);
  net.forward(x);
  test::require_close(gu, net.backward(Tensor::full({1, 1}, 1.0f), true), {1e-6, 1e-4, 1e-10}, "after the switch");
  shared.bind_generic();
  CHECK(test::bitwise_equal(shared.net().input_gradient(x).dx, g0));
  test::require_error([&] { shared.net().input_gradient(x, Tensor::zeros({2, 1})); }, {"dscore", "does not match"});
}

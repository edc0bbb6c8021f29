// One generic backbone, many people (model/shared_model.h): binding user states is exact and
// reversible, the generic model is never written, user files are checked against the digest
// computed once, and personalisation's modes freeze what they say (train/personalise.h).
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>

#include "kernels/ops.h"
#include "model/shared_model.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/user_states.h"
#include "train/personalise.h"
#include "train/train_loop.h"

using namespace ae;

namespace {

Tensor scores(model::SharedModel& shared, const Tensor& x) {
  model::ResNet18& net = shared.net();
  net.set_training(false);
  net.set_grad_enabled(false);
  Tensor y = net.forward(x);
  net.set_grad_enabled(true);
  return y;
}

}  // namespace

TEST_CASE("switching people A -> B -> A gives A's outputs bit for bit, and the generic model stays the generic one") {
  const model::Checkpoint ck = test::generic_checkpoint();
  model::SharedModel shared(ck, Device::cpu(), "generic");
  const Tensor x = test::random_tensor({3, 40, 40, 3}, 11);

  auto reference = model::make_model(ck);
  reference->set_grad_enabled(false);
  const Tensor generic_out = reference->forward(x);
  CHECK(test::bitwise_equal(scores(shared, x), generic_out));  // zero adapters: exactly the generic model
  CHECK(shared.digest() == model::model_digest(*reference));

  auto a = test::random_user(shared, 100, "alice");
  auto b = test::random_user(shared, 200, "bob");
  shared.bind(a);
  const Tensor a1 = scores(shared, x);
  shared.bind(b);
  const Tensor b1 = scores(shared, x);
  shared.bind(a);
  const Tensor a2 = scores(shared, x);
  CHECK_FALSE(test::bitwise_equal(a1, b1));
  CHECK(test::bitwise_equal(a1, a2));
  shared.bind_generic();
  CHECK(test::bitwise_equal(scores(shared, x), generic_out));

  // The equivalent model built the slow way (a user file applied to a fresh adapter model).
  test::TempDir dir;
  shared.bind(a);
  shared.save_bound_user_file(dir.file("alice.safetensors"), "alice");
  auto slow = model::make_adapter_model(ck);
  model::apply_user_file(*slow, model::read_user_file(dir.file("alice.safetensors")));
  slow->set_grad_enabled(false);
  CHECK(test::bitwise_equal(slow->forward(x), a1));
  // ... and the file read back as a state binds to the same outputs.
  shared.bind(shared.load_user(dir.file("alice.safetensors")));
  CHECK(test::bitwise_equal(scores(shared, x), a1));
}

TEST_CASE("a bound state is trained in place; the generic state and other states are untouched") {
  const model::Checkpoint ck = test::generic_checkpoint();
  model::SharedModel shared(ck, Device::cpu(), "generic");
  const Tensor x = test::random_tensor({4, 32, 32, 3}, 3);
  const Tensor t = test::random_tensor({4, 1}, 4);
  const Tensor generic_out = scores(shared, x);
  auto b = test::random_user(shared, 300, "bob");
  shared.bind(b);
  const Tensor b_out = scores(shared, x);

  for (train::PersonaliseMode mode :
       {train::PersonaliseMode::adapters, train::PersonaliseMode::head, train::PersonaliseMode::full}) {
    INFO("mode " << train::mode_name(mode));
    shared.bind_generic();
    auto s = shared.fresh_state(train::scope_of(mode), "carol");
    shared.bind(s);
    train::configure_mode(shared.net(), mode);
    auto owned = train::make_optimizers(shared.net(), mode, 1e-3f, 0.01f);
    std::vector<train::Optimizer*> opts;
    for (auto& o : owned) opts.push_back(o.get());
    CHECK(opts.size() == (mode == train::PersonaliseMode::adapters ? 2u : 1u));
    train::TrainStep step(shared.net(), opts, Device::cpu());
    shared.net().set_training(true);
    for (int i = 0; i < 2; ++i) CHECK(step.run(x, t).finite);
    shared.net().set_training(false);

    // What the mode trains changed, the rest did not.
    const auto snap = shared.snapshot();
    const auto fresh = shared.fresh_state(train::scope_of(mode));
    int changed_adapters = 0, changed_bn = 0, changed_head = 0, changed_stats = 0, changed_conv = 0;
    for (std::size_t i = 0; i < snap->entries.size(); ++i) {
      const auto& e = snap->entries[i];
      if (e.is_counter) {
        CHECK(e.counter == fresh->entries[i].counter + (mode == train::PersonaliseMode::head && e.name.rfind("head.", 0) != 0 ? 0 : 2));
        continue;
      }
      if (test::bitwise_equal(e.value, fresh->entries[i].value)) continue;
      if (e.name.find("adapter") != std::string::npos) ++changed_adapters;
      else if (e.name.rfind("head.", 0) == 0) ++changed_head;
      else if (e.name.find("running") != std::string::npos) ++changed_stats;
      else if (e.name.find("conv") != std::string::npos || e.name.find("downsample.0") != std::string::npos) ++changed_conv;
      else ++changed_bn;
    }
    CHECK(changed_head > 0);
    CHECK((changed_adapters > 0) == (mode == train::PersonaliseMode::adapters));
    CHECK((changed_bn > 0) == (mode != train::PersonaliseMode::head));
    // head mode: the frozen backbone's BatchNorms run on (and keep) the generic running statistics
    CHECK((changed_stats > 0) == (mode != train::PersonaliseMode::head));
    CHECK((changed_conv > 0) == (mode == train::PersonaliseMode::full));

    shared.bind_generic();
    CHECK(test::bitwise_equal(scores(shared, x), generic_out));
    shared.bind(b);
    CHECK(test::bitwise_equal(scores(shared, x), b_out));
  }
}

TEST_CASE("frozen convolutions keep no input and still give the same input gradient") {
  model::ModelConfig cfg;
  cfg.adapters = true;
  model::ResNet18 frozen(cfg), trainable(cfg);
  frozen.set_trainable(model::ParamGroup::backbone, false);
  const Tensor x = test::random_tensor({2, 32, 32, 3}, 5);
  const Tensor dy = test::random_tensor({2, 1}, 6);
  for (auto* net : {&frozen, &trainable}) net->set_training(true);
  frozen.forward(x);
  trainable.forward(x);
  const Tensor dx_frozen = frozen.backward(dy, /*need_input_grad=*/true);
  const Tensor dx_trainable = trainable.backward(dy, true);
  CHECK(test::bitwise_equal(dx_frozen, dx_trainable));
  int frozen_grads = 0;
  for (auto& r : frozen.parameters())
    if (r.param->group == model::ParamGroup::backbone && r.param->grad.defined()) ++frozen_grads;
  CHECK(frozen_grads == 0);
  // Making a conv trainable between forward and backward is refused, not computed from nothing.
  frozen.forward(x);
  frozen.set_trainable(model::ParamGroup::backbone, true);
  test::require_error([&] { frozen.backward(dy, true); }, {"Conv2d.backward", "frozen during the forward"});
}

TEST_CASE("user files are checked against the digest computed once; bind refuses foreign states") {
  const model::Checkpoint ck = test::generic_checkpoint(7);
  model::SharedModel shared(ck, Device::cpu(), "--model 'g.safetensors'");
  model::SharedModel other(test::generic_checkpoint(8), Device::cpu(), "--model 'other.safetensors'");
  test::TempDir dir;
  other.bind(test::random_user(other, 5, "dave"));
  other.save_bound_user_file(dir.file("dave.safetensors"), "dave");
  test::require_error([&] { shared.load_user(dir.file("dave.safetensors")); },
                      {"dave.safetensors' was trained on generic model " + other.digest(),
                       "--model 'g.safetensors' has digest " + shared.digest()});
  // A state with a wrong shape leaves the binding as it was.
  const Tensor x = test::random_tensor({1, 32, 32, 3}, 9);
  const Tensor before = scores(shared, x);
  auto bad = shared.fresh_state(model::StateScope::user, "eve");
  bad->entries.back().value = Tensor::zeros({3});
  test::require_error([&] { shared.bind(bad); }, {"cannot bind", bad->entries.back().name});
  CHECK(test::bitwise_equal(scores(shared, x), before));
  // A model with non-zero adapters is a personalised model, not a generic one.
  model::ModelConfig cfg;
  cfg.adapters = true;
  model::ResNet18 personal(cfg);
  for (auto& r : personal.parameters())
    if (r.param->group == model::ParamGroup::adapters) r.param->value.fill(0.01f);
  model::SharedModel personalised(model::checkpoint_from_tensors(personal.state_dict(), "p"), Device::cpu(), "--model 'p'");
  test::require_error([&] { personalised.digest(); }, {"--model 'p'", "not zero", "personalised model"});
  test::require_error([&] { personalised.load_user(dir.file("dave.safetensors")); }, {"personalised model"});
}

TEST_CASE("the personalisation defaults are the original's table") {
  train::PersonaliseOptions o;
  o.k = 10;
  o.mode = train::PersonaliseMode::head;
  train::apply_defaults(o);
  CHECK(o.repeats == 10);
  CHECK(o.epochs == 20);
  CHECK(o.lr == doctest::Approx(1e-3));
  CHECK(o.decay_every == 5);
  train::PersonaliseOptions h;
  h.k = 100;
  h.mode = train::PersonaliseMode::head;
  train::apply_defaults(h);
  CHECK(h.repeats == 3);
  CHECK(h.lr == doctest::Approx(1e-4));
  CHECK(h.decay_every == 2);
  train::PersonaliseOptions a;
  a.k = 100;
  train::apply_defaults(a);
  CHECK(a.mode == train::PersonaliseMode::adapters);
  CHECK(a.epochs == 100);
  CHECK(a.weight_decay == doctest::Approx(0.01));
  CHECK(a.lr == doctest::Approx(1e-3));
  CHECK(a.decay_every == 5);
  CHECK(a.batch == 30);
  CHECK(a.resize_to == 256);
  train::PersonaliseOptions f;
  f.k = 100;
  f.mode = train::PersonaliseMode::full;
  train::apply_defaults(f);
  CHECK(f.lr == doctest::Approx(1e-4));
  CHECK(f.epochs == 20);
  CHECK(f.weight_decay == 0);
  test::require_error([] { train::parse_mode("last-layers"); }, {"--mode must be adapters, head or full"});
}

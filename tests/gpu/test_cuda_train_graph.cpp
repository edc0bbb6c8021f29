// A whole training step captured as a device graph (train/train_graph.h; issue 15), on the emulated
// device in CI: a replay makes the eager TrainStep's bits (losses, every state-dict entry, every
// optimiser state tensor) for Adam with an LR change between replays and for SGD with momentum; a
// NaN batch is reported and changes no weight and no optimiser state; what a captured step cannot
// do is refused; and today's TrainStep cannot be captured (its host read of the loss is refused).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cuda/graph.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "model/resnet18.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "train/optimizer.h"
#include "train/train_graph.h"
#include "train/train_loop.h"

using namespace ae;
using namespace ae::gputest;

namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Every named tensor of `a` and `b` bit for bit (state dicts, optimiser states); names the first difference.
void require_same_state(const ae::model::NamedTensors& a, const ae::model::NamedTensors& b, const std::string& what) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(what << ": " << a[i].first);
    REQUIRE(a[i].first == b[i].first);
    REQUIRE(test::bitwise_equal(a[i].second, b[i].second));
  }
}

ae::model::NamedTensors parameters_of(ae::model::ResNet18& net) {
  ae::model::NamedTensors out;
  for (const ae::model::ParamRef& r : net.parameters()) out.emplace_back(r.name, r.param->value.to(Device::cpu()));
  return out;
}

ae::model::ModelConfig train_config() {
  ae::model::ModelConfig c;
  c.head = ae::model::HeadType::seed;
  c.adapters = false;
  c.dropout = 0.0f;  // a captured step refuses dropout (its seed would be frozen)
  c.seed = 16;
  return c;
}

}  // namespace

TEST_CASE("a captured training step replays the eager steps bit for bit; a NaN batch changes no weight") {
  AE_GPU_TEST_PRELUDE();
  for (const ae::train::OptimizerKind kind : {ae::train::OptimizerKind::adam, ae::train::OptimizerKind::sgd}) {
    const bool adam = kind == ae::train::OptimizerKind::adam;
    INFO(std::string(adam ? "adam" : "sgd"));
    // Two identical models from the same start: `eager` takes TrainStep steps only, `graphed` one
    // eager step and then replays of one captured step.
    ae::model::ResNet18 eager_net(train_config()), graph_net(train_config());
    eager_net.to(device());
    graph_net.to(device());
    eager_net.set_training(true);
    graph_net.set_training(true);
    ae::train::OptimizerConfig oc;
    oc.kind = kind;
    oc.lr = 1e-3f;
    oc.weight_decay = 1e-4f;
    ae::train::Optimizer eager_opt(eager_net.trainable_parameters(), oc), graph_opt(graph_net.trainable_parameters(), oc);
    ae::train::TrainStep eager_step(eager_net, {&eager_opt}, device()), first_step(graph_net, {&graph_opt}, device());
    ae::train::TrainGraph graph(graph_net, {&graph_opt}, device());

    const int steps = adam ? 3 : 2;
    for (int k = 0; k < steps; ++k) {
      INFO("step " << k);
      const Tensor x = to_device(test::random_tensor({2, 32, 32, 3}, 60 + k, -2.0f, 2.0f));
      const Tensor t = to_device(test::random_tensor({2, 1}, 70 + k));
      if (k == 2) {  // a new learning rate between replays reaches the captured step
        eager_opt.set_lr(5e-4f);
        graph_opt.set_lr(5e-4f);
      }
      const ae::train::TrainStep::Outcome a = eager_step.run(x, t);
      const ae::train::TrainStep::Outcome b = k == 0 ? first_step.run(x, t) : graph.run(x, t);
      CHECK(a.finite);
      CHECK(b.finite);
      CHECK(same_bits(a.loss, b.loss));
    }
    CHECK(graph.captures() == 1);
    CHECK(graph.replays() == steps - 1);
    CHECK(eager_opt.steps() == steps);
    CHECK(graph_opt.steps() == steps);
    require_same_state(eager_net.state_dict(), graph_net.state_dict(), "model after the steps");
    require_same_state(eager_opt.state(), graph_opt.state(), "optimiser after the steps");

    if (adam) {
      // A batch with a NaN: reported, no weight and no optimiser state changes, the step not counted;
      // both paths agree on everything else (the forward ran: BatchNorm running statistics).
      // (A NaN target: a NaN pixel would not reach the loss, ReLU and max-pooling drop it.)
      Tensor tn_host = test::random_tensor({2, 1}, 81);
      tn_host.f32()[1] = std::nanf("");
      const Tensor xn = to_device(test::random_tensor({2, 32, 32, 3}, 80, -2.0f, 2.0f)), tn = to_device(tn_host);
      const ae::model::NamedTensors params_before = parameters_of(graph_net);
      const auto opt_before = graph_opt.state();
      const ae::train::TrainStep::Outcome a = eager_step.run(xn, tn);
      const ae::train::TrainStep::Outcome b = graph.run(xn, tn);
      CHECK(!a.finite);
      CHECK(!b.finite);
      CHECK(std::isnan(b.loss));
      CHECK(same_bits(a.loss, b.loss));
      require_same_state(parameters_of(graph_net), params_before, "weights after a NaN batch");
      require_same_state(graph_opt.state(), opt_before, "optimiser after a NaN batch");
      CHECK(graph_opt.steps() == steps);
      require_same_state(eager_net.state_dict(), graph_net.state_dict(), "model after a NaN batch");
      CHECK(graph.captures() == 1);
    }
    require_guards_intact();
  }
}

TEST_CASE("TrainGraph refuses dropout, a CPU model and eval mode") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = test::random_tensor({2, 32, 32, 3}, 90), t = test::random_tensor({2, 1}, 91);
  ae::model::ModelConfig c = train_config();
  c.dropout = 0.5f;
  ae::model::ResNet18 net(c);
  net.to(device());
  net.set_training(true);
  ae::train::Optimizer opt(net.trainable_parameters(), {});
  ae::train::TrainGraph graph(net, {&opt}, device());
  test::require_error([&] { (void)graph.run(x, t); }, {"TrainGraph", "dropout 0.5", "freeze"});
  ae::model::ResNet18 cpu_net(train_config());
  cpu_net.set_training(true);
  ae::train::Optimizer cpu_opt(cpu_net.trainable_parameters(), {});
  ae::train::TrainGraph cpu_graph(cpu_net, {&cpu_opt}, Device::cpu());
  test::require_error([&] { (void)cpu_graph.run(x, t); }, {"TrainGraph", "CUDA devices only"});
  ae::model::ResNet18 eval_net(train_config());
  eval_net.to(device());
  eval_net.set_training(false);
  ae::train::Optimizer eval_opt(eval_net.trainable_parameters(), {});
  ae::train::TrainGraph eval_graph(eval_net, {&eval_opt}, device());
  test::require_error([&] { (void)eval_graph.run(x, t); }, {"TrainGraph", "training mode"});
  CHECK(graph.captures() + cpu_graph.captures() + eval_graph.captures() == 0);
}

TEST_CASE("today's training step cannot be captured: its loss read is refused by name") {
  AE_GPU_TEST_PRELUDE();
  // TrainStep::run reads the loss on the host (item()) between the forward and the backward; see
  // docs/cuda_graphs.md for what a capturable step needs. The capture must fail there, loudly.
  ae::model::ResNet18 net(train_config());
  net.to(device());
  net.set_training(true);
  ae::train::Optimizer opt(net.trainable_parameters(), {});
  ae::train::TrainStep step(net, {&opt}, device());
  const Tensor x = to_device(test::random_tensor({2, 32, 32, 3}, 50));
  const Tensor t = to_device(test::random_tensor({2, 1}, 51));
  test::require_error([&] { (void)ops::capture_graph(device(), "training step", [&] { step.run(x, t); }); },
                      {"download of 4 bytes", "during the capture of CUDA graph 'training step'"});
  CHECK(!cuda::capturing());
  CHECK(opt.steps() == 0);
  // The thread is back to normal: an eager step runs.
  CHECK(std::isfinite(step.run(x, t).loss));
  CHECK(opt.steps() == 1);
  require_guards_intact();
}

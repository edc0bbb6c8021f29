// A whole training step captured as a device graph (train/train_graph.h; issue 15), on the emulated
// device in CI: a replay makes the eager TrainStep's bits (losses, every state-dict entry, every
// optimiser state tensor) for Adam with an LR change between replays and for SGD with momentum,
// with head dropout drawing fresh masks per replay; a NaN batch is reported and changes no weight
// and no optimiser state; what a captured step cannot do is refused; the eager TrainStep cannot be
// captured (its host read of the loss is refused); and TrainStep's own use of graphs in the training
// loop (run_epoch): warm-up, capture, replays, an eager tail batch and the fallback when a capture
// fails, all with the eager loop's bits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/batchnorm_sync.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/graph.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "model/resnet18.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "train/loader.h"
#include "train/optimizer.h"
#include "train/synthetic.h"
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
  c.dropout = 0.5f;  // replays draw fresh masks from the step offset written before each
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
      const Tensor x = to_device(test::random_tensor({2, 16, 16, 3}, 60 + k, -2.0f, 2.0f));
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
    {
      const Tensor x = to_device(test::random_tensor({2, 16, 16, 3}, 60)), t = to_device(test::random_tensor({2, 1}, 70));
      CHECK(graph.captured_for(x, t));
      const cuda::ScopedConvMath tf32(cuda::ConvMath::tf32);  // other kernels: a replay would be stale
      CHECK(!graph.captured_for(x, t));
    }
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
      const Tensor xn = to_device(test::random_tensor({2, 16, 16, 3}, 80, -2.0f, 2.0f)), tn = to_device(tn_host);
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

TEST_CASE("TrainGraph refuses a CPU model and eval mode") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = test::random_tensor({2, 32, 32, 3}, 90), t = test::random_tensor({2, 1}, 91);
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
  CHECK(cpu_graph.captures() + eval_graph.captures() == 0);
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
  step.set_graphs(false);  // the eager step itself, not TrainStep's own use of TrainGraph
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

namespace {

// One model trained for `epochs` epochs of `samples` through run_epoch, by a TrainStep with or without
// graphs.
struct LoopRun {
  ae::model::NamedTensors model, optimizer;
  std::vector<double> epoch_losses;
  int captures = 0;
  int64_t replays = 0;
  bool graphs_after = false;
};

LoopRun train_loop(const std::vector<ae::data::Sample>& samples, int epochs, bool graphs, bool adapters = false) {
  // (16 px and few images: every step is a ResNet-18 step on the emulated device)
  ae::model::ModelConfig c = train_config();
  c.adapters = adapters;
  ae::model::ResNet18 net(c);
  net.to(device());
  net.set_training(true);
  ae::train::OptimizerConfig oc;
  oc.kind = ae::train::OptimizerKind::adam;
  oc.lr = 1e-3f;
  ae::train::Optimizer opt(net.trainable_parameters(), oc);
  ae::train::TrainStep step(net, {&opt}, device());
  step.set_graphs(graphs);
  ae::data::LoaderConfig lc;
  lc.batch = 4;
  lc.workers = 1;
  lc.seed = 3;
  lc.transform.size = 16;
  lc.transform.resize_to = 20;
  ae::data::Loader loader(samples, lc);
  LoopRun r;
  ae::train::Position pos;
  for (int e = 0; e < epochs; ++e) {
    const ae::train::EpochOutcome out = ae::train::run_epoch(loader, e, pos, step);
    REQUIRE(out.end == ae::train::EpochOutcome::End::finished);
    r.epoch_losses.push_back(pos.mean_loss());
    pos = ae::train::Position{};
    pos.epoch = e + 1;
  }
  r.model = net.state_dict();
  r.optimizer = opt.state();
  r.captures = step.graph_captures();
  r.replays = step.graph_replays();
  r.graphs_after = step.graphs();
  return r;
}

// 6 synthetic images in batches of 4: a full batch and a 2-row tail per epoch, so the shapes alternate.
// Made once per process (the loader reads the files).
const std::vector<ae::data::Sample>& six_samples() {
  static const test::TempDir dir;
  static const std::vector<ae::data::Sample> samples = [] {
    ae::data::SyntheticConfig sc;
    sc.count = 6;
    sc.width = 24;
    sc.height = 20;
    ae::data::make_synthetic_dataset(dir.path.string(), sc);
    std::vector<ae::data::Sample> out;
    for (int i = 0; i < sc.count; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "img_%05d.png", i);
      out.push_back({dir.file(name), 0.3f * static_cast<float>(i) - 0.7f});
    }
    return out;
  }();
  return samples;
}

// The first 4 of them: one full batch per epoch, so epoch 1 runs eagerly and epoch 2 captures.
std::vector<ae::data::Sample> four_samples() {
  return std::vector<ae::data::Sample>(six_samples().begin(), six_samples().begin() + 4);
}

void require_same_run(const LoopRun& a, const LoopRun& b, const std::string& what) {
  REQUIRE(a.epoch_losses.size() == b.epoch_losses.size());
  for (std::size_t e = 0; e < a.epoch_losses.size(); ++e) {
    INFO(what << ": epoch " << e + 1 << " mean loss");
    CHECK(a.epoch_losses[e] == b.epoch_losses[e]);
  }
  require_same_state(a.model, b.model, what + ": model");
  require_same_state(a.optimizer, b.optimizer, what + ": optimiser");
}

}  // namespace

TEST_CASE("TrainStep in the training loop: epoch 1 runs both shapes eagerly, then full batches replay") {
  AE_GPU_TEST_PRELUDE();
  const int epochs = 3;
  const LoopRun eager = train_loop(six_samples(), epochs, false);
  const LoopRun graphed = train_loop(six_samples(), epochs, true);
  CHECK(eager.captures == 0);
  CHECK(graphed.captures == 1);
  CHECK(graphed.replays == epochs - 1);  // the full batch of epochs 2 and 3; every tail ran eagerly
  CHECK(graphed.graphs_after);
  require_same_run(eager, graphed, "graphed loop with dropout");
  require_guards_intact();
}

TEST_CASE("TrainStep in the training loop: a model with residual adapters (personalisation's) replays too") {
  AE_GPU_TEST_PRELUDE();
  const LoopRun eager = train_loop(four_samples(), 2, false, true);
  const LoopRun graphed = train_loop(four_samples(), 2, true, true);
  CHECK(graphed.captures == 1);
  CHECK(graphed.replays == 1);
  require_same_run(eager, graphed, "graphed loop with adapters");
  require_guards_intact();
}

TEST_CASE("TrainStep in the training loop: a capture that fails falls back to eager steps for good") {
  AE_GPU_TEST_PRELUDE();
  // A one-process reducer (the sums are already global): its host round trip is refused in a
  // capture, so the capture at epoch 2's batch fails and every step runs eagerly.
  const ae::ops::ScopedBatchNormSync sync([](double*, int64_t) {});
  const LoopRun eager = train_loop(four_samples(), 2, false);
  const LoopRun fallback = train_loop(four_samples(), 2, true);
  CHECK(fallback.captures == 0);
  CHECK(fallback.replays == 0);
  CHECK(!fallback.graphs_after);
  require_same_run(eager, fallback, "loop after a failed capture");
  require_guards_intact();
}

TEST_CASE("Predictor replays one captured eval forward across calls, with the eager predictions' bits") {
  AE_GPU_TEST_PRELUDE();
  ae::model::ResNet18 net(train_config());
  net.to(device());
  ae::data::LoaderConfig lc;
  lc.batch = 4;
  lc.workers = 1;
  lc.shuffle = false;
  lc.transform.size = 16;
  lc.transform.resize_to = 16;
  ae::data::Loader loader(six_samples(), lc);  // a full batch of 4 and a tail of 2
  ae::train::Predictor graphed(net, device()), eager(net, device(), /*graphs=*/false);
  // As in a training loop: the evaluations come after training steps (the parameters have
  // gradients), and the optimiser lists the model's state once.
  ae::train::Optimizer opt(net.trainable_parameters(), {});
  ae::train::TrainStep step(net, {&opt}, device());
  net.set_training(true);
  REQUIRE(step.run(to_device(test::random_tensor({2, 16, 16, 3}, 94)), to_device(test::random_tensor({2, 1}, 93))).finite);
  auto require_same = [](const ae::train::Predictions& a, const ae::train::Predictions& b, const std::string& what) {
    INFO(what);
    REQUIRE(a.pred.size() == 6);
    REQUIRE(a.pred.size() == b.pred.size());
    for (std::size_t i = 0; i < a.pred.size(); ++i) CHECK(same_bits(static_cast<float>(a.pred[i]), static_cast<float>(b.pred[i])));
    CHECK(a.samples == b.samples);
  };
  require_same(graphed.run(loader), eager.run(loader), "call 1: every shape new, all eager");
  CHECK(graphed.graph_captures() == 0);
  CHECK(net.training());  // restored afterwards, as the grad flag
  CHECK(net.grad_enabled());
  require_same(graphed.run(loader), eager.run(loader), "call 2: the full batch captured and replayed");
  CHECK(graphed.graph_captures() == 1);
  CHECK(graphed.graph_replays() == 1);
  CHECK(eager.graph_captures() == 0);

  // A training step and a checkpoint's state listing between evaluations: the weights change in
  // place and no fold exists to drop, so the graph replays the new weights without a new capture.
  const ae::train::Predictions before = eager.run(loader);
  REQUIRE(step.run(to_device(test::random_tensor({2, 16, 16, 3}, 95)), to_device(test::random_tensor({2, 1}, 96))).finite);
  (void)net.state_dict();
  const ae::train::Predictions after = eager.run(loader);
  CHECK(!same_bits(static_cast<float>(before.pred[0]), static_cast<float>(after.pred[0])));
  require_same(graphed.run(loader), after, "call 3: after a training step");
  CHECK(graphed.graph_captures() == 1);
  CHECK(graphed.graph_replays() == 2);

  // scores(), one batch at a time as `aesthete score` calls it: a batch of the graph's shape replays.
  const Tensor batch = test::random_tensor({4, 16, 16, 3}, 97, -2.0f, 2.0f);
  const std::vector<float> eager_scores = eager.scores(batch);
  const std::vector<float> graph_scores = graphed.scores(batch);
  REQUIRE(graph_scores.size() == 4);
  CHECK(std::memcmp(graph_scores.data(), eager_scores.data(), 4 * sizeof(float)) == 0);
  CHECK(graphed.graph_replays() == 3);
  CHECK(!net.training());  // left in eval mode without gradients, as scores() documents
  CHECK(!net.grad_enabled());
  require_guards_intact();
}

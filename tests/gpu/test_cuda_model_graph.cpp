// Device graphs of functions of a ResNet-18 (model/model_graph.h) on the emulated device, which
// records and replays graphs as a GPU does:
//   - ModelGraph replays the input-gradient pass (several inputs, several outputs) with the eager
//     pass's bits, and captures again for a new shape;
//   - GraphedFunction runs the first call of a shape eagerly, captures the first repeat, keeps other
//     shapes eager, never captures on the CPU or when turned off, and falls back to eager calls when
//     the capture is refused (counted by how often the function ran: the path really taken);
//   - enhancement (both modes) and SmoothGrad saliency give the same bits with graphs as without,
//     and really replayed.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "model/model_graph.h"
#include "model/shared_model.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "train/enhance.h"
#include "train/saliency.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// A seed-head model with small random adapters (so the folded-adapter caches matter).
model::ModelConfig config() {
  model::ModelConfig c;
  c.head = model::HeadType::seed;
  c.adapters = true;
  c.dropout = 0.0f;
  c.seed = 41;
  return c;
}

void randomise_adapters(model::ResNet18& m) {
  uint64_t seed = 4100;
  for (const model::ParamRef& r : m.parameters())
    if (r.param->group == model::ParamGroup::adapters)
      r.param->value = test::random_tensor(r.param->value.shape(), seed++, -0.05f, 0.05f).to(r.param->value.device());
}

std::vector<Tensor> input_gradient_fn(model::ResNet18& net, const std::vector<Tensor>& in) {
  const model::ResNet18::InputGradient ig = net.input_gradient(in[0], in[1]);
  return {ig.score, ig.dx};
}

Tensor ones(int64_t n) { return Tensor::full({n, 1}, 1.0f); }

img::Image test_photo(int w, int h, uint64_t seed) {
  img::Image im;
  im.width = w;
  im.height = h;
  const Tensor v = test::random_tensor({h, w, 3}, seed, 0.0f, 255.0f);
  for (int64_t i = 0; i < v.numel(); ++i) im.rgb.push_back(static_cast<uint8_t>(v.f32()[i]));
  return im;
}

model::Checkpoint checkpoint() {
  model::ResNet18 net(config());
  randomise_adapters(net);
  return model::checkpoint_from_tensors(net.state_dict(), "graph test");
}

}  // namespace

TEST_CASE("ModelGraph replays the input-gradient pass with the eager pass's bits") {
  AE_GPU_TEST_PRELUDE();
  model::ResNet18 net(config());
  net.to(device());
  randomise_adapters(net);
  net.set_training(false);

  model::ModelGraph graph(net, "input-gradient pass",
                          [&net](const std::vector<Tensor>& in) { return input_gradient_fn(net, in); });
  const Tensor x0 = test::random_tensor({2, 32, 32, 3}, 1, -2.0f, 2.0f);
  const Tensor x1 = test::random_tensor({2, 32, 32, 3}, 2, -2.0f, 2.0f);
  auto eager = [&](const Tensor& x) { return input_gradient_fn(net, {to_device(x), to_device(ones(x.dim(0)))}); };
  auto same = [](const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
    return a.size() == 2 && b.size() == 2 && test::bitwise_equal(a[0], b[0]) && test::bitwise_equal(a[1], b[1]);
  };
  const std::vector<Tensor> e0 = eager(x0), e1 = eager(x1);

  CHECK(same(graph.run({x0, ones(2)}), e0));
  CHECK(graph.captures() == 1);
  REQUIRE(graph.graph() != nullptr);
  CHECK(graph.graph()->node_count() > 40);  // forward and backward, not an eager fallback
  CHECK(same(graph.run({to_device(x1), ones(2)}), e1));  // a device input: copied into the static one
  CHECK(same(graph.run({x0, ones(2)}), e0));
  CHECK(graph.captures() == 1);
  CHECK(graph.replays() == 3);

  // Another batch size: captured again.
  const Tensor x2 = test::random_tensor({1, 32, 32, 3}, 3, -2.0f, 2.0f);
  const std::vector<Tensor> e2 = eager(x2);
  CHECK(same(graph.run({x2, ones(1)}), e2));
  CHECK(graph.captures() == 2);

  // New weight tensors (as a person's state bound by handle): captured again, and the replay reads them.
  for (const model::ParamRef& r : net.parameters())
    if (r.param->group == model::ParamGroup::adapters) r.param->value = ops::scale(r.param->value, 2.0f);
  const std::vector<Tensor> e3 = eager(x2);
  REQUIRE(!test::bitwise_equal(e3[1], e2[1]));  // the change matters
  CHECK(same(graph.run({x2, ones(1)}), e3));
  CHECK(graph.captures() == 3);
  require_guards_intact();
}

TEST_CASE("GraphedFunction: the first repeat of a shape is captured, other shapes stay eager") {
  AE_GPU_TEST_PRELUDE();
  model::ResNet18 net(config());
  net.to(device());
  randomise_adapters(net);
  net.set_training(false);
  net.set_grad_enabled(false);
  int calls = 0;  // how often the function ran: eager 1, capture 2 (warm-up + capture), replay 0
  auto forward = [&](const std::vector<Tensor>& in) {
    ++calls;
    return std::vector<Tensor>{net.forward(in[0])};
  };
  const Tensor a = test::random_tensor({2, 32, 32, 3}, 5, -2.0f, 2.0f);
  const Tensor b = test::random_tensor({1, 32, 32, 3}, 6, -2.0f, 2.0f);
  const Tensor ya = net.forward(to_device(a)), yb = net.forward(to_device(b));
  calls = 0;

  model::GraphedFunction f(net, true, "the test forward", forward);
  CHECK(test::bitwise_equal(f({a})[0], ya));  // first of its shape: eager
  CHECK(calls == 1);
  CHECK(f.graph_captures() == 0);
  CHECK(test::bitwise_equal(f({a})[0], ya));  // the repeat: captured and replayed
  CHECK(calls == 3);
  CHECK(f.graph_captures() == 1);
  CHECK(f.graph_replays() == 1);
  CHECK(test::bitwise_equal(f({b})[0], yb));  // another shape: eager
  CHECK(test::bitwise_equal(f({b})[0], yb));  // and again: the graph keeps its shape
  CHECK(calls == 5);
  CHECK(test::bitwise_equal(f({a})[0], ya));
  CHECK(calls == 5);
  CHECK(f.graph_captures() == 1);
  CHECK(f.graph_replays() == 2);

  model::GraphedFunction off(net, false, "the test forward", forward);  // turned off
  calls = 0;
  for (int i = 0; i < 3; ++i) CHECK(test::bitwise_equal(off({a})[0], ya));
  CHECK(calls == 3);
  CHECK(off.graph_captures() == 0);
  require_guards_intact();
}

TEST_CASE("GraphedFunction falls back to eager calls when the capture is refused") {
  AE_GPU_TEST_PRELUDE();
  model::ResNet18 net(config());
  net.to(device());
  net.set_training(false);
  net.set_grad_enabled(false);
  int calls = 0;
  // The input-gradient pass with its default seed: made on the host and copied to the device
  // inside the function, which a capture refuses.
  model::GraphedFunction f(net, true, "the test pass", [&](const std::vector<Tensor>& in) {
    ++calls;
    return std::vector<Tensor>{net.input_gradient(in[0]).dx};
  });
  const Tensor x = test::random_tensor({1, 32, 32, 3}, 7, -2.0f, 2.0f);
  const Tensor expect = net.input_gradient(to_device(x)).dx;
  CHECK(test::bitwise_equal(f({x})[0], expect));
  CHECK(calls == 1);
  CHECK(test::bitwise_equal(f({x})[0], expect));  // warm-up, refused capture, then eager: 3 runs
  CHECK(calls == 4);
  CHECK(f.graph_captures() == 0);  // the failed graph is gone
  CHECK(test::bitwise_equal(f({x})[0], expect));  // eager for good: no second attempt
  CHECK(calls == 5);
  CHECK(f.graph_replays() == 0);
  require_guards_intact();
}

TEST_CASE("GraphedFunction on the CPU: every call eager") {
  model::ResNet18 net(config());
  net.set_training(false);
  net.set_grad_enabled(false);
  int calls = 0;
  model::GraphedFunction f(net, true, "the test forward", [&](const std::vector<Tensor>& in) {
    ++calls;
    return std::vector<Tensor>{net.forward(in[0])};
  });
  const Tensor x = test::random_tensor({1, 32, 32, 3}, 8, -2.0f, 2.0f);
  const Tensor y = net.forward(x);
  for (int i = 0; i < 3; ++i) CHECK(test::bitwise_equal(f({x})[0], y));
  CHECK(calls == 3);
  CHECK(f.graph_captures() == 0);
}

TEST_CASE("enhancement and SmoothGrad saliency: the same bits with graphs as without, and replayed") {
  AE_GPU_TEST_PRELUDE();
  const model::Checkpoint ck = checkpoint();
  model::SharedModel shared(ck, device(), "graph test");
  const img::Image photo = test_photo(40, 30, 9);

  for (train::EnhanceMode mode : {train::EnhanceMode::global, train::EnhanceMode::pixels}) {
    CAPTURE(train::enhance_mode_name(mode));
    train::EnhanceOptions o;
    o.mode = mode;
    o.steps = 2;
    o.max_side = 32;
    o.size = 32;
    o.cuda_graphs = false;
    const train::EnhanceResult eager = train::enhance(shared, photo, o);
    o.cuda_graphs = true;
    const train::EnhanceResult graphed = train::enhance(shared, photo, o);
    CHECK(eager.graph_replays == 0);
    // Every evaluation after the first of the working image's shape replays (a capture's own call
    // is a replay too).
    CHECK(graphed.graph_replays == static_cast<int64_t>(graphed.accepted + graphed.rejected));
    CHECK(graphed.graph_replays >= 1);
    CHECK(graphed.scores == eager.scores);
    CHECK(graphed.accepted == eager.accepted);
    CHECK(graphed.image.rgb == eager.image.rgb);
    CHECK(graphed.recipe.theta() == eager.recipe.theta());
  }

  train::SaliencyOptions so;
  so.size = 32;
  so.smoothgrad = 2;
  so.batch = 1;  // the clean pass and the two noisy ones share a shape: 1 eager, then 1 capture, 2 replays
  so.cuda_graphs = false;
  const train::SaliencyResult eager = train::compute_saliency(shared, photo, so);
  so.cuda_graphs = true;
  const train::SaliencyResult graphed = train::compute_saliency(shared, photo, so);
  CHECK(eager.graph_replays == 0);
  CHECK(graphed.graph_replays == 2);
  CHECK(graphed.map == eager.map);
  CHECK(graphed.score == eager.score);
  require_guards_intact();
}

// CUDA graphs (kernels/cuda/graph.h, model/inference_graph.h; issue 15). On the emulated device a
// capture records kernels and copies without running them and a replay runs the records, so these
// tests prove that captured work is replay-correct without a GPU:
//   - a capture runs nothing (outputs are still the allocator's NaN poison after it), a replay
//     computes, and a replay sees new values written into its input buffers;
//   - by-value kernel arguments are frozen at capture (the behaviour that makes a host-computed
//     per-step scalar a bug in a graph);
//   - every operation a capture cannot contain is an ae::Error naming the operation and the graph,
//     leaves the thread out of capture mode, and makes end_capture() report it;
//   - memory made during a capture stays in the graph's pool, and memory the graph may reference is
//     not handed out again while the graph lives: a replay never writes a tensor allocated later
//     (checked on blocks of exactly the sizes the cache would otherwise reuse, with red zones);
//   - a ResNet-18 eval forward replayed through InferenceGraph is bit for bit the eager forward,
//     across new inputs, and is captured again when the shape or the weights' tensors change.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/graph.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/stream.h"
#include "kernels/graph.h"
#include "kernels/ops.h"
#include "model/inference_graph.h"
#include "model/resnet18.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

bool all_nan(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  for (int64_t i = 0; i < h.numel(); ++i)
    if (!std::isnan(h.f32()[i])) return false;
  return true;
}

// (a + b) * 0.5 on the CPU: the reference of the small graph below (both ops are exact per element).
Tensor add_scale_cpu(const Tensor& a, const Tensor& b) { return ops::scale(ops::add(a, b), 0.5f); }

}  // namespace

TEST_CASE("a capture runs nothing; a replay runs the recorded kernels on the buffers' current values") {
  AE_GPU_TEST_PRELUDE();
  const Shape shape{3, 5, 7};  // 105 elements: not a multiple of a block
  Tensor a_host = test::random_tensor(shape, 1), b_host = test::random_tensor(shape, 2);
  Tensor a = to_device(a_host), b = to_device(b_host);
  cuda::CapturedGraph g("add-scale");
  Tensor y;
  g.capture([&] { y = ops::scale(ops::add(a, b), 0.5f); });
  CHECK(g.captured());
  CHECK(!cuda::capturing());
  CHECK(g.node_count() == 2);  // two kernels, nothing else
  CHECK(g.pool_bytes() > 0);   // y and the intermediate sum came from the graph's pool
  // Nothing ran: y still holds the allocator's poison (guard mode poisons every new block).
  REQUIRE(cuda::guard_bytes_enabled());
  CHECK(all_nan(y));

  g.replay();
  CHECK(test::bitwise_equal(y, add_scale_cpu(a_host, b_host)));
  // New values in the same buffers: the graph reads memory, not values frozen at capture.
  a_host = test::random_tensor(shape, 3);
  a.copy_from(a_host);
  g.replay();
  CHECK(test::bitwise_equal(y, add_scale_cpu(a_host, b_host)));
  g.replay();  // replays are repeatable
  CHECK(test::bitwise_equal(y, add_scale_cpu(a_host, b_host)));

  // A second capture into the same object replaces the first.
  g.capture([&] { y = ops::add(a, a); });
  CHECK(g.node_count() == 1);
  g.replay();
  CHECK(test::bitwise_equal(y, ops::add(a_host, a_host)));
  require_guards_intact();
}

TEST_CASE("device-to-device copies are recorded, and by-value kernel arguments are frozen at capture") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x_host = test::random_tensor({257}, 4);
  const Tensor x = to_device(x_host);
  Tensor copy = Tensor::empty({257}, DType::f32, device());
  float s = 2.0f;
  Tensor y;
  cuda::CapturedGraph g("copy-scale");
  g.capture([&] {
    copy.copy_from(x);  // a copy node
    y = ops::scale(copy, s);
  });
  CHECK(g.node_count() == 2);
  CHECK(all_nan(copy));  // the copy did not run at capture either
  s = 3.0f;              // a host value changed after the capture...
  g.replay();
  CHECK(test::bitwise_equal(copy, x_host));
  // ...is not seen: the kernel argument was frozen at 2. A per-step host scalar (a learning rate,
  // a step count) passed by value is exactly this bug in a captured training step.
  CHECK(test::bitwise_equal(y, ops::scale(x_host, 2.0f)));
  require_guards_intact();
}

TEST_CASE("zeroing a device tensor is captured as a memset, not refused as an upload") {
  AE_GPU_TEST_PRELUDE();
  Tensor z = to_device(test::random_tensor({3, 37}, 12));  // 111 floats: not a multiple of anything
  const Tensor before = z.to(Device::cpu());
  cuda::CapturedGraph g("zero");
  Tensor fresh;
  g.capture([&] {
    z.zero_();
    fresh = Tensor::zeros({5}, DType::f32, device());
  });
  CHECK(g.node_count() == 2);  // two memsets, no upload
  CHECK(test::bitwise_equal(z, before));  // a capture runs nothing
  g.replay();
  CHECK(test::bitwise_equal(z, Tensor::zeros({3, 37})));
  CHECK(test::bitwise_equal(fresh, Tensor::zeros({5})));
  z.copy_from(before);  // written again by other work: the next replay zeroes it again
  g.replay();
  CHECK(test::bitwise_equal(z, Tensor::zeros({3, 37})));
  require_guards_intact();
}

namespace {

// Begins a capture of a graph named "refusal probe", queues a kernel, runs `op`, and returns the
// error `op` must throw. Afterwards the thread is out of capture mode, end_capture() reports the
// same refusal, and the graph object captures normally again.
std::string refusal_of(const std::function<void()>& op) {
  const Tensor a = to_device(test::random_tensor({9}, 7));
  cuda::CapturedGraph g("refusal probe");
  g.begin_capture();
  REQUIRE(cuda::capturing());
  CHECK(cuda::capturing_graph_name() == "refusal probe");
  (void)ops::add(a, a);
  const std::string message = test::error_of(op);
  CHECK(!cuda::capturing());
  CHECK(test::contains(message, "during the capture of CUDA graph 'refusal probe'"));
  const std::string reported = test::error_of([&] { g.end_capture(); });
  CHECK(test::contains(reported, "'refusal probe' was not captured"));
  CHECK(test::contains(reported, message.substr(0, 40)));
  CHECK(!g.captured());
  Tensor y;
  g.capture([&] { y = ops::add(a, a); });
  g.replay();
  CHECK(test::bitwise_equal(y, ops::add(a.to(Device::cpu()), a.to(Device::cpu()))));
  return message;
}

}  // namespace

TEST_CASE("what a capture cannot contain is an error naming the operation and the graph") {
  AE_GPU_TEST_PRELUDE();
  const Tensor d = to_device(test::random_tensor({1}, 8));
  const Tensor host = test::random_tensor({16}, 9);
  Tensor dev16 = Tensor::empty({16}, DType::f32, device());

  CHECK(test::contains(refusal_of([&] { (void)d.item(); }), "download of 4 bytes to the host"));
  CHECK(test::contains(refusal_of([&] { (void)d.to_vector(); }), "download"));
  CHECK(test::contains(refusal_of([&] { (void)d.to(Device::cpu()); }), "download"));
  CHECK(test::contains(refusal_of([&] { (void)host.to(device()); }), "upload of 64 bytes to the device"));
  CHECK(test::contains(refusal_of([&] { dev16.copy_from(host); }), "static input"));
  CHECK(test::contains(refusal_of([&] { (void)Tensor::full({16}, 1.0f, device()); }), "upload"));
  CHECK(test::contains(refusal_of([] { cuda::synchronize(); }), "synchronize()"));
  CHECK(test::contains(refusal_of([] { cuda::synchronize_stream(cuda::backend_stream()); }), "synchronize_stream()"));
  CHECK(test::contains(refusal_of([] {
                         cuda::StreamEvent e;
                         e.record(cuda::backend_stream());
                       }),
                       "StreamEvent::record()"));
  CHECK(test::contains(refusal_of([] { cuda::release_cached_memory(); }), "release_cached_memory()"));

  // Nested captures, and replays during a capture.
  cuda::CapturedGraph other("other");
  Tensor y;
  other.capture([&] { y = ops::add(d, d); });
  cuda::CapturedGraph g("outer");
  g.begin_capture();
  cuda::CapturedGraph inner("inner");
  test::require_error([&] { inner.begin_capture(); }, {"begin_capture of CUDA graph 'inner'", "captures 'outer'",
                                                        "do not nest"});
  test::require_error([&] { other.replay(); }, {"replay of CUDA graph 'other'", "during the capture of CUDA graph 'outer'"});
  g.end_capture();
  CHECK(g.node_count() == 0);
  test::require_error([&] { inner.replay(); }, {"replay of CUDA graph 'inner'", "nothing was captured"});
  test::require_error([&] { inner.end_capture(); }, {"end_capture of CUDA graph 'inner'", "without a begin_capture"});

  // An exception from the captured work abandons the capture and leaves the thread normal.
  cuda::CapturedGraph thrower("thrower");
  test::require_error([&] { thrower.capture([] { AE_FAIL("the work failed"); }); }, {"the work failed"});
  CHECK(!cuda::capturing());
  CHECK(!thrower.captured());

  // Graphs exist on CUDA devices only; the CPU backend says so.
  test::require_error([] { (void)ops::capture_graph(Device::cpu(), "cpu graph", [] {}); },
                      {"capture_graph 'cpu graph'", "cpu backend has no device graphs"});
  require_guards_intact();
}

TEST_CASE("a graph's memory is private: a replay never writes memory allocated after the capture") {
  AE_GPU_TEST_PRELUDE();
  constexpr int64_t kN = 1000;
  const Tensor x_host = test::random_tensor({kN}, 10);

  cuda::release_cached_memory();  // an empty general cache: the control below is deterministic
  // Control: without a graph, a freed block is handed out again at once (same size, cache hit),
  // so the checks below would see the graph's buffers reused if the pool rules did not hold.
  {
    Tensor t = Tensor::empty({kN}, DType::f32, device());
    const void* p = t.raw();
    t = Tensor();
    const Tensor again = Tensor::empty({kN}, DType::f32, device());
    REQUIRE(again.raw() == p);
  }

  const cuda::MemoryStats before = cuda::memory_stats();
  Tensor x = to_device(x_host);  // allocated before the capture: the graph reads it
  Tensor out;
  auto g = std::make_unique<cuda::CapturedGraph>("private pool");
  g->capture([&] {
    const Tensor doubled = ops::scale(x, 2.0f);  // freed inside the capture: back to the pool
    out = ops::add(doubled, x);
  });
  const void* out_address = out.raw();
  const void* x_address = x.raw();
  g->replay();
  CHECK(test::bitwise_equal(out, ops::add(ops::scale(x_host, 2.0f), x_host)));

  // Drop both: the graph still writes out's block and reads x's at every replay.
  out = Tensor();
  x = Tensor();
  const cuda::MemoryStats dropped = cuda::memory_stats();
  CHECK(dropped.graph_pools > before.graph_pools);  // out's block went back to the graph's pool
  CHECK(dropped.deferred > before.deferred);        // x's block is held back while the graph lives

  // New tensors of exactly those sizes, allocated outside the capture, get other blocks...
  const Tensor fresh_host = test::random_tensor({kN}, 11);
  std::vector<Tensor> fresh;
  for (int i = 0; i < 4; ++i) {
    fresh.push_back(to_device(fresh_host));
    CHECK(fresh.back().raw() != out_address);
    CHECK(fresh.back().raw() != x_address);
  }
  // ...and replays leave them untouched.
  g->replay();
  g->replay();
  for (const Tensor& t : fresh) CHECK(test::bitwise_equal(t, fresh_host));
  require_guards_intact();

  // Once the graph is gone its pool and the deferred blocks are ordinary cache again.
  g.reset();
  const cuda::MemoryStats after = cuda::memory_stats();
  CHECK(after.graph_pools == before.graph_pools);
  CHECK(after.deferred == before.deferred);
  require_guards_intact();
}

namespace {

ae::model::ModelConfig config() {
  ae::model::ModelConfig c;
  c.head = ae::model::HeadType::seed;
  c.adapters = true;
  c.dropout = 0.0f;
  c.seed = 15;
  return c;
}

// Adapters start at zero; small random ones make the folded-adapter path matter.
void randomise_adapters(ae::model::ResNet18& m) {
  uint64_t seed = 1500;
  for (const ae::model::ParamRef& r : m.parameters())
    if (r.param->group == ae::model::ParamGroup::adapters)
      r.param->value = test::random_tensor(r.param->value.shape(), seed++, -0.05f, 0.05f).to(r.param->value.device());
}

Tensor eager(ae::model::ResNet18& net, const Tensor& x) { return net.forward(x.to(device())).to(Device::cpu()); }

}  // namespace

TEST_CASE("ResNet-18 inference through a graph is bit for bit the eager forward, re-captured when it must be") {
  AE_GPU_TEST_PRELUDE();
  ae::model::ResNet18 net(config());
  net.to(device());
  randomise_adapters(net);
  net.set_training(false);
  net.set_grad_enabled(false);

  ae::model::InferenceGraph graph(net);
  const Tensor x0 = test::random_tensor({2, 32, 32, 3}, 20, -2.0f, 2.0f);
  const Tensor x1 = test::random_tensor({2, 32, 32, 3}, 21, -2.0f, 2.0f);
  const Tensor y0 = eager(net, x0), y1 = eager(net, x1);

  CHECK(test::bitwise_equal(graph.forward(x0), y0));  // host input: uploaded into the static input
  CHECK(graph.captures() == 1);
  REQUIRE(graph.graph() != nullptr);
  CHECK(graph.graph()->node_count() > 20);  // the whole network, not an eager fallback
  CHECK(test::bitwise_equal(graph.forward(to_device(x1)), y1));  // device input: a device copy
  CHECK(test::bitwise_equal(graph.forward(x0), y0));
  CHECK(graph.captures() == 1);
  CHECK(graph.replays() == 3);

  // A new shape: captured again.
  const Tensor x2 = test::random_tensor({1, 32, 32, 3}, 22, -2.0f, 2.0f);
  CHECK(test::bitwise_equal(graph.forward(x2), eager(net, x2)));
  CHECK(graph.captures() == 2);

  // A value written in place into a weight the graph reads directly (the head's last bias): no
  // new capture, and the replay sees it.
  for (const ae::model::ParamRef& r : net.parameters()) {
    if (r.name != "head.8.bias") continue;
    ops::add_inplace(r.param->value, to_device(Tensor::full({1}, 0.25f)), 1.0f);
  }
  // (parameters() listed the state, which drops the blocks' folded adapters: that alone is a
  // reason to capture again, since the graph holds the old folds' addresses.)
  const Tensor y2 = eager(net, x2);
  CHECK(test::bitwise_equal(graph.forward(x2), y2));
  CHECK(graph.captures() == 3);
  const Tensor x3 = test::random_tensor({1, 32, 32, 3}, 23, -2.0f, 2.0f);
  const Tensor y3 = eager(net, x3);
  CHECK(test::bitwise_equal(graph.forward(x3), y3));
  CHECK(graph.captures() == 3);

  // The model moved to new tensors: captured again.
  net.to(Device::cpu());
  net.to(device());
  CHECK(test::bitwise_equal(graph.forward(x3), y3));
  CHECK(graph.captures() == 4);

  // The blocks' folded adapters rebuilt (an in-place adapter write made known to the block).
  // Nothing else changed, so only the cache generation tells the graph.
  const ae::model::StateEntry* adapter = nullptr;
  std::vector<ae::model::StateEntry> entries = net.state_entries_for_reading();
  for (const ae::model::StateEntry& e : entries)
    if (e.name == "layer1.0.adapter1.weight") adapter = &e;
  REQUIRE(adapter != nullptr);
  ops::add_inplace(adapter->param->value, to_device(test::random_tensor(adapter->param->value.shape(), 24, -0.01f, 0.01f)),
                   1.0f);
  (void)net.state_entries();  // the documented way to drop the folds (list_state)
  const Tensor y3b = eager(net, x3);
  CHECK(!test::bitwise_equal(y3b, y3));
  CHECK(test::bitwise_equal(graph.forward(x3), y3b));
  CHECK(graph.captures() == 5);

  // Another convolution arithmetic (--conv-math) picks other kernels: captured again, and the
  // replay is the eager forward under it (which really differs from the f32 one).
  {
    const cuda::ScopedConvMath bf16(cuda::ConvMath::bf16);
    const Tensor y3_bf16 = eager(net, x3);
    CHECK(!test::bitwise_equal(y3_bf16, y3b));
    CHECK(test::bitwise_equal(graph.forward(x3), y3_bf16));
    CHECK(graph.captures() == 6);
    CHECK(test::bitwise_equal(graph.forward(x3), y3_bf16));
    CHECK(graph.captures() == 6);
  }
  CHECK(test::bitwise_equal(graph.forward(x3), y3b));  // and back
  CHECK(graph.captures() == 7);
  require_guards_intact();
}

TEST_CASE("InferenceGraph refuses a model that is training, keeps gradients or lives on the CPU") {
  AE_GPU_TEST_PRELUDE();
  ae::model::ModelConfig c = config();
  c.adapters = false;
  ae::model::ResNet18 net(c);
  ae::model::InferenceGraph graph(net);
  const Tensor x = test::random_tensor({2, 32, 32, 3}, 30);
  net.set_training(false);
  net.set_grad_enabled(false);
  test::require_error([&] { (void)graph.forward(x); }, {"InferenceGraph", "cpu", "CUDA devices only"});
  net.to(device());
  net.set_training(true);
  test::require_error([&] { (void)graph.forward(x); }, {"InferenceGraph", "training mode"});
  net.set_training(false);
  net.set_grad_enabled(true);
  test::require_error([&] { (void)graph.forward(x); }, {"InferenceGraph", "grad enabled"});
  net.set_grad_enabled(false);
  test::require_error([&] { (void)graph.forward(test::random_tensor({2, 32, 32, 4}, 31)); },
                      {"InferenceGraph", "[N,H,W,3]"});
  CHECK(graph.captures() == 0);
}

TEST_CASE("a guarded pool block is reused within a capture only for the same payload size") {
  AE_GPU_TEST_PRELUDE();
  // Inside one capture a block freed by a longer tensor and taken by a shorter one would have the
  // shorter one's red zone written at every replay by the longer one's (legitimate) kernel. With red
  // zones on, the pool hands a freed block only to a tensor of exactly its size.
  REQUIRE(cuda::guard_bytes_enabled());
  const Tensor a = to_device(test::random_tensor({2}, 40));
  Tensor small;
  const void* long_block = nullptr;
  cuda::CapturedGraph g("pool sizes");
  g.capture([&] {
    {
      const Tensor longer = ops::add(a, a);  // 2 floats, freed at the end of this scope
      long_block = longer.raw();
    }
    small = ops::scale(a.rows(0, 1), 1.0f);  // 1 float: same rounded block size, not the same block
  });
  CHECK(small.raw() != long_block);
  g.replay();
  g.replay();
  CHECK(test::bitwise_equal(small, a.rows(0, 1).to(Device::cpu())));
  require_guards_intact();
}

// The flat gradient buffer of the GPU all-reduce (kernels/cuda/nccl_grads.h): gradients of many
// shapes packed into one flat device buffer and back, bit for bit (NaN payloads, -0 and tensors
// beyond one launch's table included), and the pack -> collective -> unpack pipeline with a
// collective whose result is known. On a real GPU the collective runs on the non-blocking
// communication stream, so a missing event between the streams shows up as stale values.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cuda/nccl_grads.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/stream.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// The parameter shapes of a small network (conv, BatchNorm, linear), plus an empty tensor and one
// element, repeated `copies` times.
std::vector<Shape> shapes(int copies) {
  const std::vector<Shape> one = {{64, 3, 7, 7}, {64}, {64}, {0}, {128, 64, 3, 3}, {1}, {10, 512}, {10}, {3, 5, 1}};
  std::vector<Shape> all;
  for (int c = 0; c < copies; ++c) all.insert(all.end(), one.begin(), one.end());
  return all;
}

std::vector<Tensor> host_tensors(const std::vector<Shape>& s, uint64_t seed) {
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < s.size(); ++i) out.push_back(test::random_tensor(s[i], seed + i, -3.0f, 3.0f));
  return out;
}

// The host tensors concatenated: what the flat buffer must hold.
std::vector<float> concatenated(const std::vector<Tensor>& host) {
  std::vector<float> all;
  for (const Tensor& t : host) all.insert(all.end(), t.f32(), t.f32() + t.numel());
  return all;
}

int64_t total_of(const std::vector<Tensor>& ts) {
  int64_t n = 0;
  for (const Tensor& t : ts) n += t.numel();
  return n;
}

}  // namespace

TEST_CASE("pack and unpack move gradients of every shape through one flat buffer bit for bit") {
  AE_GPU_TEST_PRELUDE();
  // 7 copies of 9 shapes: 63 tensors, more than one launch's table of 48.
  for (const int copies : {1, 7}) {
    INFO(copies << " copies of the shape list");
    std::vector<Tensor> host = host_tensors(shapes(copies), 11);
    // Bit patterns an arithmetic copy would change: a NaN payload, -0, a denormal.
    const uint32_t nan_payload = 0x7fc01234u, denormal = 0x00000003u;
    std::memcpy(host[0].f32() + 5, &nan_payload, 4);
    host[0].f32()[6] = -0.0f;
    std::memcpy(host[1].f32() + 2, &denormal, 4);
    std::vector<Tensor> dev;
    for (const Tensor& h : host) dev.push_back(to_device(h));
    const int64_t total = total_of(host);
    Tensor flat = Tensor::empty({total}, DType::f32, device());
    std::vector<const Tensor*> parts;
    for (const Tensor& d : dev) parts.push_back(&d);
    cuda::pack_flat(parts, flat.f32(), cuda::backend_stream());
    CHECK(test::bitwise_equal(flat.to(Device::cpu()), Tensor::from_vector({total}, concatenated(host))));

    // Unpack into fresh (NaN-poisoned by the harness) tensors: every element is written.
    std::vector<Tensor> back;
    for (const Tensor& h : host) back.push_back(Tensor::empty(h.shape(), DType::f32, device()));
    std::vector<Tensor*> out;
    for (Tensor& b : back) out.push_back(&b);
    cuda::unpack_flat(flat.f32(), out, cuda::backend_stream());
    for (std::size_t i = 0; i < host.size(); ++i) {
      INFO("tensor " << i << " " << host[i].desc());
      CHECK(test::bitwise_equal(back[i].to(Device::cpu()), host[i]));
    }
  }
  require_guards_intact();
}

TEST_CASE("a part that is not a float32 device tensor is refused with its index") {
  AE_GPU_TEST_PRELUDE();
  Tensor flat = Tensor::empty({8}, DType::f32, device());
  const Tensor on_host = Tensor::zeros({4});
  const Tensor ok = to_device(Tensor::zeros({2}));
  test::require_error([&] { cuda::pack_flat({&ok, &on_host}, flat.f32(), cuda::backend_stream()); },
                      {"flat gradient buffer: part 1", "float32 tensors on the CUDA device only"});
}

TEST_CASE("the all-reduce pipeline: pack, collective on its own stream, unpack in place") {
  AE_GPU_TEST_PRELUDE();
  std::vector<Tensor> host = host_tensors(shapes(6), 31);
  const int64_t total = total_of(host);
  // The "collective": overwrites the flat buffer with known values (7x, as if seven ranks held
  // the same gradients), on the communication stream.
  std::vector<float> expected = concatenated(host);
  for (float& v : expected) v = 7.0f * v;
  const Tensor sums = to_device(Tensor::from_vector({total}, expected));
  int calls = 0;
  cuda::FlatAllReduce reducer([&](float* flat, int64_t n, cuda::Stream stream, const std::string& what) {
    ++calls;
    CHECK(n == total);
    CHECK(what == "gradient all-reduce (step 1)");
    CHECK(stream == reducer.communication_stream());
    cuda::pack_flat({&sums}, flat, stream);
  });
  std::vector<Tensor> dev;
  for (const Tensor& h : host) dev.push_back(to_device(h));
  std::vector<Tensor*> list;
  for (Tensor& d : dev) list.push_back(&d);
  const std::vector<void*> before = [&] {
    std::vector<void*> p;
    for (const Tensor& d : dev) p.push_back(d.raw());
    return p;
  }();
  reducer.sum(list, "gradient all-reduce (step 1)");
  CHECK(calls == 1);
  CHECK(reducer.flat_capacity() == total);
  int64_t at = 0;
  for (std::size_t i = 0; i < dev.size(); ++i) {
    INFO("tensor " << i << " " << host[i].desc());
    CHECK(dev[i].raw() == before[i]);  // in place: the optimiser keeps its pointers
    const std::vector<float> want(expected.begin() + at, expected.begin() + at + host[i].numel());
    CHECK(test::bitwise_equal(dev[i].to(Device::cpu()), Tensor::from_vector(host[i].shape(), want)));
    at += host[i].numel();
  }
  // A smaller list reuses the buffer (its first elements); an empty one calls no collective.
  int small_calls = 0;
  int64_t expected_n = 0;
  cuda::FlatAllReduce small([&](float*, int64_t n, cuda::Stream, const std::string&) {
    ++small_calls;
    CHECK(n == expected_n);
  });
  std::vector<Tensor*> first_two{list[0], list[1]}, four{list[0], list[1], list[2], list[3]};
  expected_n = host[0].numel() + host[1].numel() + host[2].numel() + host[3].numel();
  small.sum(four, "first");
  const int64_t capacity = small.flat_capacity();
  CHECK(capacity == expected_n);
  expected_n = host[0].numel() + host[1].numel();
  small.sum(first_two, "smaller");
  small.sum({}, "nothing");
  CHECK(small_calls == 2);
  CHECK(small.flat_capacity() == capacity);
}

TEST_CASE("ordering a stream after an event that was never recorded is an error, not a silent no-op") {
  AE_GPU_TEST_PRELUDE();
  cuda::StreamEvent e;
  test::require_error([&] { e.order_before(cuda::backend_stream()); }, {"never recorded"});
  e.record(cuda::backend_stream());
  e.order_before(cuda::backend_stream());
}

TEST_CASE("the process's device: one per process, cuda:0 here, and another index is refused") {
  AE_GPU_TEST_PRELUDE();
  const cuda::DeviceInfo& info = cuda::initialize();
  CHECK(info.index == cuda::device_index());
  CHECK(info.index == 0);  // a single process (not under mpirun)
  CHECK_FALSE(info.model.empty());
  cuda::request_device(0);  // agrees with the choice: accepted
  test::require_error([] { cuda::request_device(1); },
                      {"device cuda:1 requested after this process started on cuda:0", "one CUDA device"});
  test::require_error([] { (void)Tensor::empty({4}, DType::f32, Device::cuda(1)); },
                      {"device cuda:1 requested, but this process runs on cuda:0"});
}

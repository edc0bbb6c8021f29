// Tensor, device parsing, errors, the host allocator's block cache and the Philox RNG.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "runtime/alloc.h"
#include "runtime/device.h"
#include "runtime/philox.h"
#include "runtime/tensor.h"
#include "tests/support/check.h"

using namespace ae;

TEST_CASE("tensor basics: shape, numel, zeros, views share storage") {
  Tensor t = Tensor::zeros({2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(t.ndim() == 3);
  CHECK(t.dim(-1) == 4);
  CHECK(t.desc() == "[2,3,4] f32 cpu");
  CHECK(reinterpret_cast<uintptr_t>(t.raw()) % 64 == 0);
  for (float v : t.to_vector()) CHECK(v == 0.0f);

  Tensor r = t.rows(1, 2);
  CHECK(r.shape() == Shape{1, 3, 4});
  r.fill(5.0f);
  std::vector<float> v = t.to_vector();
  CHECK(v[11] == 0.0f);
  CHECK(v[12] == 5.0f);
  CHECK(v[23] == 5.0f);

  Tensor c = t.clone();
  c.fill(1.0f);
  CHECK(t.to_vector()[0] == 0.0f);  // clone does not alias

  Tensor flat = t.reshape({24});
  CHECK(flat.f32()[12] == 5.0f);
}

TEST_CASE("tensor errors say what and where") {
  Tensor t = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(t.reshape({5}), doctest::Contains("cannot reshape [2,3] f32 cpu to [5]"), ae::Error);
  CHECK_THROWS_WITH_AS(t.rows(1, 3), doctest::Contains("rows [1,3) out of range"), ae::Error);
  CHECK_THROWS_WITH_AS(t.data<int64_t>(), doctest::Contains("accessed as i64"), ae::Error);
  CHECK_THROWS_WITH_AS(t.dim(2), doctest::Contains("dimension 2 out of range"), ae::Error);
  CHECK_THROWS_WITH_AS(Tensor::from_vector({2}, {1.0f}), doctest::Contains("needs 2 values, got 1"), ae::Error);
  CHECK_THROWS_WITH_AS(Tensor().raw(), doctest::Contains("undefined tensor"), ae::Error);
  Tensor i = Tensor::zeros({2}, DType::i64);
  CHECK_THROWS_WITH_AS(check_f32("conv2d_forward", "x", i), doctest::Contains("conv2d_forward: x [2] i64 cpu must be f32"),
                       ae::Error);
  CHECK_THROWS_WITH_AS(check_shape("bn", "gamma", t, {3}), doctest::Contains("bn: gamma has shape [2,3], expected [3]"),
                       ae::Error);
}

TEST_CASE("TensorIdentity: the same memory while the tensor is, never a freed storage's successor") {
  Tensor a = Tensor::zeros({4, 3});
  const TensorIdentity id(a);
  CHECK(id.same_as(a));
  CHECK(id.same_as(Tensor(a)));                  // a copy shares the storage
  CHECK(!id.same_as(a.rows(1, 3)));              // another offset in it
  CHECK(!id.same_as(a.clone()));                 // the same values elsewhere
  CHECK(id.same_as(a.reshape({12})));            // same memory, other shape: the same address
  const Tensor b = Tensor::zeros({4, 3});
  std::vector<const Tensor*> list = {&a, &b};
  const std::vector<TensorIdentity> ids = TensorIdentity::of(list);
  CHECK(TensorIdentity::all_same(ids, list));
  CHECK(!TensorIdentity::all_same(ids, {&a}));   // not as many
  CHECK(!TensorIdentity::all_same(ids, {&b, &a}));
  a = Tensor::zeros({4, 3});                      // the old storage is freed; its address may come back
  CHECK(!id.same_as(a));
  CHECK(!TensorIdentity::all_same(ids, list));
  CHECK(TensorIdentity().same_as(Tensor()));     // undefined matches undefined only
  CHECK(!TensorIdentity().same_as(a));
  CHECK(!id.same_as(Tensor()));
}

TEST_CASE("a CUDA tensor without a CUDA device is a clear error") {
  if (device_allocator() != nullptr) return;  // a build with a (possibly emulated) device registered
  CHECK_THROWS_WITH_AS(Tensor::empty({4}, DType::f32, Device::cuda()), doctest::Contains("no usable CUDA device"),
                       ae::Error);
}

TEST_CASE("device parsing") {
  CHECK(parse_device("cpu") == Device::cpu());
  CHECK(parse_device("cuda") == Device::cuda(0));
  CHECK(parse_device("cuda:3") == Device::cuda(3));
  CHECK(parse_device("cuda:3").str() == "cuda:3");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""}) {
    CHECK_THROWS_WITH_AS(parse_device(bad), doctest::Contains("expected cpu, cuda or cuda:N"), ae::Error);
  }
}

TEST_CASE("philox matches the Random123 known-answer vectors") {
  // Known-answer tests from Random123's kat_vectors for philox4x32_10.
  auto r = philox::philox4x32(0, 0, 0, 0, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u);
  CHECK(r.v[1] == 0xe169c58du);
  CHECK(r.v[2] == 0xbc57ac4cu);
  CHECK(r.v[3] == 0x9b00dbd8u);
  r = philox::philox4x32(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK(r.v[0] == 0x408f276du);
  CHECK(r.v[1] == 0x41c83b0eu);
  CHECK(r.v[2] == 0xa20bc7c6u);
  CHECK(r.v[3] == 0x6d5451fdu);
  r = philox::philox4x32(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u);
  CHECK(r.v[1] == 0x94fdccebu);
  CHECK(r.v[2] == 0x5001e420u);
  CHECK(r.v[3] == 0x24126ea1u);
}

TEST_CASE("philox uniform stream: deterministic, in [0,1), roughly uniform, seeds differ") {
  double sum = 0;
  std::set<uint32_t> distinct;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float u = philox::uniform(42, i);
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    CHECK(u == philox::uniform(42, i));
    sum += u;
    distinct.insert(philox::u32(42, i));
  }
  CHECK(sum / n == doctest::Approx(0.5).epsilon(0.01));
  CHECK(distinct.size() > n - 10);
  int same = 0;
  for (int i = 0; i < 1000; ++i) same += philox::u32(1, i) == philox::u32(2, i);
  CHECK(same < 3);
}

namespace {
// Restores the cache limit a test changed.
struct CacheLimitGuard {
  std::size_t saved = host_memory_stats().cache_limit;
  ~CacheLimitGuard() { set_host_cache_limit(saved); }
};
}  // namespace

TEST_CASE("host blocks are 64-byte aligned and writable to their last byte, small and large") {
  for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{64}, std::size_t{65},
                            std::size_t{131071}, std::size_t{131072}, std::size_t{1000001}, std::size_t{9u << 20}}) {
    INFO(bytes << " bytes");
    auto* p = static_cast<unsigned char*>(host_alloc(bytes));
    CHECK(reinterpret_cast<std::uintptr_t>(p) % kHostAlignment == 0);
    std::memset(p, 0xab, bytes);
    host_free(p);
  }
  host_free(nullptr);
  CHECK_THROWS_WITH_AS(host_alloc(std::size_t{1} << 63), doctest::Contains("out of host memory"), Error);
}

TEST_CASE("a freed large block is handed out again for a request of its size class; the cache is bounded") {
  if (!host_cache_supported()) {
    MESSAGE("SKIPPED: this is an AddressSanitizer build, where the host cache is off so that a use after free stays visible");
    CHECK(host_memory_stats().cache_limit == 0);
    return;
  }
  CacheLimitGuard guard;
  set_host_cache_limit(std::size_t{64} << 20);
  release_host_cache();
  const HostMemoryStats s0 = host_memory_stats();

  // 1,000,000 and 1,040,000 bytes share the 1 MiB class (8 classes per power of two).
  void* a = host_alloc(1000000);
  host_free(a);
  CHECK(host_memory_stats().cached_bytes == (std::size_t{1} << 20) + kHostAlignment);
  void* b = host_alloc(1040000);
  CHECK(b == a);
  HostMemoryStats s1 = host_memory_stats();
  CHECK(s1.cache_hits == s0.cache_hits + 1);
  CHECK(s1.allocations == s0.allocations + 2);
  CHECK(s1.cached_bytes == 0);
  CHECK(s1.live_bytes == s0.live_bytes + (std::size_t{1} << 20) + kHostAlignment);
  // A request of another class does not take it.
  host_free(b);
  void* c = host_alloc(1200000);
  CHECK(c != b);
  host_free(c);

  // Small blocks are glibc's business: never cached.
  const std::size_t cached = host_memory_stats().cached_bytes;
  host_free(host_alloc(4096));
  CHECK(host_memory_stats().cached_bytes == cached);

  // Lowering the limit releases down to it; limit 0 caches nothing.
  set_host_cache_limit((std::size_t{1} << 20) + kHostAlignment);
  CHECK(host_memory_stats().cached_bytes <= (std::size_t{1} << 20) + kHostAlignment);
  set_host_cache_limit(0);
  CHECK(host_memory_stats().cached_bytes == 0);
  void* d = host_alloc(1 << 20);
  host_free(d);
  CHECK(host_memory_stats().cached_bytes == 0);

  // The bound holds however much is freed.
  set_host_cache_limit(std::size_t{3} << 20);
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(host_alloc(1 << 20));
  for (void* p : blocks) host_free(p);
  CHECK(host_memory_stats().cached_bytes <= std::size_t{3} << 20);
  CHECK(host_memory_stats().cached_bytes >= std::size_t{2} << 20);
  release_host_cache();
  CHECK(host_memory_stats().cached_bytes == 0);
}

TEST_CASE("host blocks live at once never overlap, with threads allocating and freeing together") {
  CacheLimitGuard guard;
  set_host_cache_limit(std::size_t{32} << 20);
  const std::size_t live0 = host_memory_stats().live_bytes;
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t, &bad] {
      std::vector<std::pair<unsigned char*, std::size_t>> held;
      for (int i = 0; i < 300; ++i) {
        const std::size_t bytes = (std::size_t{130} << 10) + static_cast<std::size_t>((i * 7919 + t * 104729) % 900000);
        auto* p = static_cast<unsigned char*>(host_alloc(bytes));
        std::memset(p, t * 16 + (i % 16), bytes);
        held.emplace_back(p, bytes);
        if (held.size() > 3) {  // free the oldest after checking nobody else wrote into it
          auto [q, n] = held.front();
          held.erase(held.begin());
          const unsigned char want = q[0];
          for (std::size_t k = 0; k < n; k += 997) bad[t] += q[k] != want;
          bad[t] += (want >> 4) != t;
          host_free(q);
        }
      }
      for (auto [q, n] : held) host_free(q);
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) CHECK(bad[t] == 0);
  CHECK(host_memory_stats().live_bytes == live0);
  CHECK(host_memory_stats().peak_live_bytes > live0);
}

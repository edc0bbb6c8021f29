// Host-to-device uploads through the pinned staging buffers (kernels/cuda/host_staging.h) and the
// caching allocator's statistics: uploads of every awkward length around the chunk size arrive
// intact (into whole tensors and into views), the two buffers are reused rather than reallocated,
// the source may be overwritten as soon as the upload returns, and kernels queued after an upload
// see its bytes. On the emulated device the same chunking code runs with synchronous copies.
#include <doctest/doctest.h>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/host_staging.h"
#include "kernels/cuda/runtime.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

constexpr std::size_t kSmallChunk = 4096;

Tensor bytes_tensor(int64_t n, uint64_t seed) {
  Tensor t = Tensor::empty({n}, DType::u8);
  for (int64_t i = 0; i < n; ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 8)) % 251);
  return t;
}

// Restores the default chunk size when a test ends, however it ends.
struct SmallChunks {
  std::size_t before = cuda::staging_chunk_bytes();
  SmallChunks() { cuda::set_staging_chunk_bytes(kSmallChunk); }
  ~SmallChunks() { cuda::set_staging_chunk_bytes(before); }
};

}  // namespace

TEST_CASE("uploads of every length around the chunk size arrive intact, in as many chunks as needed") {
  AE_GPU_TEST_PRELUDE();
  const SmallChunks small;
  const int64_t c = static_cast<int64_t>(kSmallChunk);
  uint64_t seed = 1;
  for (const int64_t n : {int64_t{1}, int64_t{7}, c - 1, c, c + 1, 2 * c, 3 * c + c / 2 + 3, 11 * c + 5}) {
    const Tensor host = bytes_tensor(n, seed++);
    const cuda::StagingStats before = cuda::staging_stats();
    const Tensor dev = host.to(device());
    const cuda::StagingStats after = cuda::staging_stats();
    INFO("upload of " << n << " bytes");
    CHECK(after.uploads == before.uploads + 1);
    CHECK(after.bytes == before.bytes + static_cast<uint64_t>(n));
    CHECK(after.chunks - before.chunks == static_cast<uint64_t>((n + c - 1) / c));
    CHECK(test::bitwise_equal(dev.to(Device::cpu()), host));
  }
  // Two buffers, allocated once for this chunk size and reused by every upload above.
  const cuda::StagingStats s = cuda::staging_stats();
  CHECK(s.buffer_bytes == 2 * kSmallChunk);
  const uint64_t allocations = s.buffer_allocations;
  for (int i = 0; i < 5; ++i) (void)bytes_tensor(3 * c, 99).to(device());
  CHECK(cuda::staging_stats().buffer_allocations == allocations);
  require_guards_intact();
}

TEST_CASE("an upload into a view writes exactly that view; an empty upload does nothing") {
  AE_GPU_TEST_PRELUDE();
  const SmallChunks small;
  const Tensor base = test::random_tensor({64, 100}, 5);
  Tensor dev = to_device(base);
  const Tensor patch = test::random_tensor({23, 100}, 6);  // 9200 bytes: three chunks
  Tensor window = dev.rows(17, 40);
  window.copy_from(patch);
  Tensor expected = base.clone();
  Tensor expected_window = expected.rows(17, 40);
  expected_window.copy_from(patch);
  CHECK(test::bitwise_equal(dev.to(Device::cpu()), expected));

  const cuda::StagingStats before = cuda::staging_stats();
  const Tensor empty = Tensor::empty({0}).to(device());
  CHECK(empty.numel() == 0);
  CHECK(cuda::staging_stats().uploads == before.uploads);
  require_guards_intact();
}

TEST_CASE("the host source may change as soon as the upload returns; later kernels see the upload") {
  AE_GPU_TEST_PRELUDE();
  const SmallChunks small;
  Tensor host = test::random_tensor({5000}, 7);  // 20000 bytes: five chunks, buffers reused
  const Tensor original = host.clone();
  const Tensor dev = host.to(device());
  host.fill(-3.0f);  // would corrupt the device copy if a chunk were still read from `host`
  const Tensor sum = ops::add(dev, dev);  // queued after the upload on the backend's stream
  cuda::synchronize();
  CHECK(test::bitwise_equal(dev.to(Device::cpu()), original));
  test::require_cuda_close(sum, ops::add(original, original), test::Tolerance{0, 0, 0}, "add after upload");
  // Upload, compute, re-upload into the same tensor, compute: each kernel sees its own upload.
  Tensor target = Tensor::empty({5000}, DType::f32, device());
  const Tensor a = test::random_tensor({5000}, 8), b = test::random_tensor({5000}, 9);
  target.copy_from(a);
  const Tensor first = ops::scale(target, 2.0f);
  target.copy_from(b);
  const Tensor second = ops::scale(target, 2.0f);
  CHECK(test::bitwise_equal(first.to(Device::cpu()), ops::scale(a, 2.0f)));
  CHECK(test::bitwise_equal(second.to(Device::cpu()), ops::scale(b, 2.0f)));
  require_guards_intact();
}

TEST_CASE("the staging chunk size is validated") {
  AE_GPU_TEST_PRELUDE();
  CHECK_THROWS_AS(cuda::set_staging_chunk_bytes(0), Error);
}

TEST_CASE("allocator statistics: bytes in use, peak, cache hits and misses") {
  AE_GPU_TEST_PRELUDE();
  // A size no other test here uses, so its first allocation cannot come from the cache.
  const Shape shape{12345 + 7};
  const cuda::MemoryStats s0 = cuda::memory_stats();
  std::size_t block = 0;
  {
    const Tensor t = Tensor::empty(shape, DType::f32, device());
    const cuda::MemoryStats s1 = cuda::memory_stats();
    CHECK(s1.cache_misses == s0.cache_misses + 1);
    CHECK(s1.cache_hits == s0.cache_hits);
    block = s1.in_use - s0.in_use;
    CHECK(block >= t.nbytes());  // rounded up (and red zones, in checked mode)
    CHECK(s1.peak >= s1.in_use);
  }
  const cuda::MemoryStats s2 = cuda::memory_stats();
  CHECK(s2.in_use == s0.in_use);  // freed into the cache
  CHECK(s2.cached >= block);
  {
    const Tensor again = Tensor::empty(shape, DType::f32, device());
    const cuda::MemoryStats s3 = cuda::memory_stats();
    CHECK(s3.cache_hits == s2.cache_hits + 1);  // the same block, from the cache
    CHECK(s3.cache_misses == s2.cache_misses);
    CHECK(s3.cached == s2.cached - block);
  }
  // The peak of a phase: two live blocks at once.
  cuda::reset_peak_memory();
  CHECK(cuda::memory_stats().peak == cuda::memory_stats().in_use);
  const std::size_t base = cuda::memory_stats().in_use;
  {
    const Tensor a = Tensor::empty(shape, DType::f32, device());
    const Tensor b = Tensor::empty(shape, DType::f32, device());
    CHECK(cuda::memory_stats().in_use == base + 2 * block);
  }
  CHECK(cuda::memory_stats().peak == base + 2 * block);
  CHECK(cuda::memory_stats().in_use == base);
  cuda::release_cached_memory();
  CHECK(cuda::memory_stats().cached == 0);
}

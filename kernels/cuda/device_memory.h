#pragma once
// Device memory for tensors: a caching allocator (cudaMalloc is slow and synchronising, and a
// training step frees and reallocates the same sizes every iteration) with an optional checked
// mode used by the GPU tests: every allocation gets red zones before and after it, its payload is
// poisoned with 0xFF bytes (NaN for f32), and check_guard_bytes() verifies every red zone, so a
// kernel that writes out of bounds or leaves part of its output unwritten fails its test.
#include <cstddef>
#include <cstdint>

namespace ae::cuda {

void* device_alloc(std::size_t bytes);  // throws ae::Error when the device is out of memory
void device_free(void* p) noexcept;
void device_copy(void* dst, const void* src, std::size_t bytes);  // any direction

// Checked mode applies to allocations made after it is switched on.
void set_guard_bytes(bool on);
bool guard_bytes_enabled();
// Throws ae::Error naming the allocation size and the first bad offset when any red zone (of a
// live block or one freed since the last check) was overwritten.
void check_guard_bytes();

struct MemoryStats {
  std::size_t in_use = 0;  // bytes handed out to tensors
  std::size_t cached = 0;  // bytes held for reuse
  std::size_t peak = 0;
  uint64_t cache_hits = 0;    // allocations served from the cache
  uint64_t cache_misses = 0;  // allocations that needed a new raw device block
};
MemoryStats memory_stats();
void release_cached_memory();
// Restarts the peak at the bytes in use now (to measure the peak of one phase).
void reset_peak_memory();

}  // namespace ae::cuda

#pragma once
// Device memory for tensors: a caching allocator (cudaMalloc is slow and synchronising, and a
// training step frees and reallocates the same sizes every iteration) with an optional checked
// mode used by the GPU tests: every allocation gets red zones before and after it, its payload is
// poisoned with 0xFF bytes (NaN for f32), and check_guard_bytes() verifies every red zone, so a
// kernel that writes out of bounds or leaves part of its output unwritten fails its test.
#include <cstddef>

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
};
MemoryStats memory_stats();
void release_cached_memory();

}  // namespace ae::cuda

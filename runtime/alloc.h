#pragma once
// Host memory: 64-byte aligned so SIMD loads and OpenBLAS never see a split cache line.
// Device memory is provided by whichever backend registers an allocator for DeviceKind::cuda.
//
// Large host blocks are cached and handed out again instead of going back to the system. glibc
// serves a block above its mmap threshold with a fresh mmap and unmaps it on free, so every step
// paid a page fault per 4 KiB of every activation it allocated: `aesthete bench --what enhance`
// took 2.3 s a step without the cache and 0.95 s with it, page faults halved, peak RSS 7% lower
// (measured, bench/RESULTS.md "Host block cache"). The cache is bounded (set_host_cache_limit) and
// off in AddressSanitizer builds, where reusing a block would hide a use after free.
#include <cstddef>
#include <cstdint>
#include <functional>

#include "runtime/device.h"

namespace ae {

constexpr std::size_t kHostAlignment = 64;

void* host_alloc(std::size_t bytes);   // throws ae::Error when out of memory
void host_free(void* ptr) noexcept;    // ptr from host_alloc, or nullptr

struct HostMemoryStats {
  std::size_t live_bytes = 0;       // handed out and not yet freed (block sizes, header included)
  std::size_t peak_live_bytes = 0;  // highest live_bytes since start or reset_host_peak()
  std::size_t cached_bytes = 0;     // freed blocks kept for reuse
  std::size_t cache_limit = 0;      // cached_bytes never exceeds it; 0 = no caching
  uint64_t allocations = 0;         // host_alloc calls
  uint64_t cache_hits = 0;          // of them, served from the cache
};
HostMemoryStats host_memory_stats();
void reset_host_peak();

// The cache's bound in bytes. Default: AE_HOST_CACHE_MB from the environment when set, else the
// smaller of 1 GiB and a quarter of physical memory; 0 turns caching off (freed blocks go back
// to the system at once). Lowering it releases cached blocks down to the new bound.
void set_host_cache_limit(std::size_t bytes);
// Returns every cached block to the system (a long-lived process between jobs).
void release_host_cache();
// False in AddressSanitizer builds, whatever the limit.
bool host_cache_supported();

struct DeviceAllocator {
  std::function<void*(std::size_t bytes, int device_index)> alloc;
  std::function<void(void* ptr, std::size_t bytes, int device_index)> free;
  // Copies between host and device or within a device; kind tells the direction.
  std::function<void(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes)> copy;
  // Sets device bytes to zero in order with the device's other work, without a host buffer (so a
  // graph capture may record it). Optional: without it Tensor::zero_ uploads zeros.
  std::function<void(void* dst, std::size_t bytes)> zero;
};

// Registered by the CUDA (or emulated-device) runtime at start-up; empty otherwise.
void register_device_allocator(DeviceAllocator allocator);
const DeviceAllocator* device_allocator();

}  // namespace ae

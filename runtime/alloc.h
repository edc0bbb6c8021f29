#pragma once
// Host memory: 64-byte aligned so SIMD loads and OpenBLAS never see a split cache line.
// Device memory is provided by whichever backend registers an allocator for DeviceKind::cuda.
#include <cstddef>
#include <functional>

#include "runtime/device.h"

namespace ae {

constexpr std::size_t kHostAlignment = 64;

void* host_alloc(std::size_t bytes);   // throws ae::Error when out of memory
void host_free(void* ptr) noexcept;

struct DeviceAllocator {
  std::function<void*(std::size_t bytes, int device_index)> alloc;
  std::function<void(void* ptr, std::size_t bytes, int device_index)> free;
  // Copies between host and device or within a device; kind tells the direction.
  std::function<void(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes)> copy;
};

// Registered by the CUDA (or emulated-device) runtime at start-up; empty otherwise.
void register_device_allocator(DeviceAllocator allocator);
const DeviceAllocator* device_allocator();

}  // namespace ae

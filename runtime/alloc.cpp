#include "runtime/alloc.h"

#include <cstdlib>
#include <memory>

#include "runtime/error.h"

namespace ae {

void* host_alloc(std::size_t bytes) {
  if (bytes == 0) bytes = kHostAlignment;
  const std::size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  void* p = std::aligned_alloc(kHostAlignment, rounded);
  AE_CHECK(p != nullptr, "out of host memory allocating " << bytes << " bytes");
  return p;
}

void host_free(void* ptr) noexcept { std::free(ptr); }

namespace {
std::unique_ptr<DeviceAllocator>& registered() {
  static std::unique_ptr<DeviceAllocator> a;
  return a;
}
}  // namespace

void register_device_allocator(DeviceAllocator allocator) {
  registered() = std::make_unique<DeviceAllocator>(std::move(allocator));
}

const DeviceAllocator* device_allocator() { return registered().get(); }

}  // namespace ae

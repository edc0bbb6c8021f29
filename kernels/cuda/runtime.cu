#include "kernels/cuda/runtime.h"

#include <sstream>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/host_staging.h"
#include "runtime/alloc.h"
#include "runtime/error.h"

namespace ae::cuda {

const ops::Backend* the_backend();  // cuda_backend.cu

namespace {

void register_device() {
  DeviceAllocator a;
  a.alloc = [](std::size_t bytes, int index) {
    AE_CHECK(index == 0, "device cuda:" << index << " requested; aesthete uses a single CUDA device (cuda:0)");
    return device_alloc(bytes);
  };
  a.free = [](void* p, std::size_t, int) { device_free(p); };
  // Uploads go through the pinned staging buffers (host_staging.h); downloads and device-to-device
  // copies are ordered after all queued work on the backend's stream.
  a.copy = [](void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
    if (src_device.is_cpu() && dst_device.is_cuda()) {
      staged_upload(dst, src, bytes);
    } else {
      device_copy(dst, src, bytes);
    }
  };
  register_device_allocator(std::move(a));
  ops::register_cuda_backend(the_backend());
}

DeviceInfo probe() {
  DeviceInfo info;
#if defined(AE_EMULATED_DEVICE)
  info.usable = true;
  info.emulated = true;
  info.name = "emulated device (CPU fibers)";
#else
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    info.reason = status != cudaSuccess ? std::string("no usable CUDA driver or GPU: ") + cudaGetErrorString(status)
                                        : std::string("no CUDA GPU found");
    return info;
  }
  AE_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  AE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  info.compute_capability = prop.major * 10 + prop.minor;
  info.sm_count = prop.multiProcessorCount;
  if (prop.major < 8) {
    info.reason = std::string(prop.name) + " is sm_" + std::to_string(info.compute_capability) +
                  "; aesthete's kernels need sm_80 or newer";
    return info;
  }
  std::ostringstream os;
  os << prop.name << " (sm_" << info.compute_capability << ", " << info.sm_count << " SMs)";
  info.name = os.str();
  info.usable = true;
#endif
  return info;
}

}  // namespace

const DeviceInfo& initialize() {
  static const DeviceInfo info = [] {
    DeviceInfo i = probe();
    if (i.usable) register_device();
    return i;
  }();
  return info;
}

void synchronize() {
#if !defined(AE_EMULATED_DEVICE)
  if (initialize().usable) AE_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

}  // namespace ae::cuda

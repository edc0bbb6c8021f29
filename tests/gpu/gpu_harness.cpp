#include "tests/gpu/gpu_harness.h"

#include <doctest/doctest.h>

#include <cstdio>

#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/runtime.h"
#include "tests/support/check.h"

namespace ae::gputest {

bool device_ready() {
  static const bool ready = [] {
    cuda::set_guard_bytes(true);  // before the first allocation, so every buffer is checked
    const cuda::DeviceInfo& info = cuda::initialize();
    if (info.usable) {
      std::printf("GPU tests on: %s\n", info.name.c_str());
    } else {
      std::printf("GPU tests skipped: %s\n", info.reason.c_str());
    }
    return info.usable;
  }();
  if (!ready) test::skip_binary("no usable CUDA device: " + cuda::initialize().reason);
  return ready;
}

bool emulated() { return cuda::initialize().emulated; }

Device device() { return Device::cuda(0); }

void require_guards_intact() {
  std::string problem;
  try {
    cuda::check_guard_bytes();
  } catch (const Error& e) {
    problem = e.what();
  }
  INFO(problem);
  REQUIRE(problem.empty());
}

Tensor to_device(const Tensor& host) { return host.to(device()); }

}  // namespace ae::gputest

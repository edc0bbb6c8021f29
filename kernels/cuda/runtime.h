#pragma once
// Bringing up the CUDA device (a real GPU or the emulated one, whichever this library was built
// for): device selection, registration of the device allocator (so Tensor::empty(..., cuda)
// works) and of the CUDA backend (so ae::ops dispatch CUDA tensors to kernels/cuda).
#include <string>

namespace ae::cuda {

struct DeviceInfo {
  bool usable = false;
  bool emulated = false;
  std::string name;    // "NVIDIA H200 (sm_90, 132 SMs)" or "emulated device (CPU fibers)"
  std::string reason;  // why it is not usable, for a clean message
  int sm_count = 0;
  int compute_capability = 0;  // 90 for sm_90
};

// Idempotent. Never throws for a missing GPU or driver: reports it in DeviceInfo instead, so a
// binary starts anywhere and says cleanly why it runs on the CPU.
const DeviceInfo& initialize();

// Waits for all queued device work (a no-op on the emulated device, which runs synchronously).
void synchronize();

}  // namespace ae::cuda

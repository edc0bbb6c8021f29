#pragma once
// Bringing up the CUDA device (a real GPU or the emulated one, whichever this library was built
// for): device selection, registration of the device allocator (so Tensor::empty(..., cuda)
// works) and of the CUDA backend (so ae::ops dispatch CUDA tensors to kernels/cuda).
//
// One device per process (DESIGN.md "Beyond one process"): the device index is state of this
// runtime, chosen once by initialize() — the index given to request_device() (--device cuda:N),
// else under mpirun/srun the node-local rank modulo the visible GPUs, else 0
// (dist::choose_device). Tensors on it are Device::cuda(device_index()); the allocator refuses
// any other index. The emulated device is one device, cuda:0.
#include <string>

namespace ae::cuda {

struct DeviceInfo {
  bool usable = false;
  bool emulated = false;
  int index = 0;       // the process's device (cudaSetDevice), valid when usable
  std::string name;    // "NVIDIA H200 (sm_90, 132 SMs)" or "emulated device (CPU fibers)"
  std::string model;   // "NVIDIA H200" or "emulated device": what announce() prints per rank
  std::string reason;  // why it is not usable, for a clean message
  int sm_count = 0;
  int compute_capability = 0;  // 90 for sm_90
};

// Asks for device `index` (--device cuda:N). Before initialize(): initialize() takes it. After:
// an ae::Error unless it is the device already chosen (a process keeps one device).
void request_device(int index);

// Idempotent. Never throws for a missing GPU or driver: reports it in DeviceInfo instead, so a
// binary starts anywhere and says cleanly why it runs on the CPU. A requested index the machine
// does not have is reported the same way (usable false, reason naming it).
const DeviceInfo& initialize();

// The process's device index (initialize() first; 0 before).
int device_index();

// cudaSetDevice(device_index()) on the calling thread, once per thread: the current device is
// per host thread, and a thread that never set it uses GPU 0. The allocator, the copies and
// synchronize() call it, so any thread that touches device memory (the main thread, the Python
// module's worker threads) works on the process's device. A no-op on the emulated device.
void bind_thread_to_device();

// Waits for all queued device work (a no-op on the emulated device, which runs synchronously).
void synchronize();

}  // namespace ae::cuda

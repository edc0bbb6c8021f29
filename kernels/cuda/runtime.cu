#include "kernels/cuda/runtime.h"

#include <atomic>
#include <cstdlib>
#include <sstream>
#include <string>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/graph.h"
#include "kernels/cuda/host_staging.h"
#include "kernels/cuda/nccl_grads.h"
#include "runtime/alloc.h"
#include "runtime/dist.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace ae::cuda {

const ops::Backend* the_backend();  // cuda_backend.cu

namespace {

// -1: no --device cuda:N before initialize(). Written before initialize(), read by it.
std::atomic<int> g_requested{-1};
// The chosen device, set once by initialize() (before any allocation can ask for it).
std::atomic<int> g_index{0};

void register_device() {
  DeviceAllocator a;
  a.alloc = [](std::size_t bytes, int index) {
    AE_CHECK(index == device_index(), "device cuda:" << index << " requested, but this process runs on cuda:"
                                                     << device_index()
                                                     << " (one CUDA device per process; see --device cuda:N)");
    bind_thread_to_device();
    return device_alloc(bytes);
  };
  a.free = [](void* p, std::size_t, int) { device_free(p); };
  // Uploads go through the pinned staging buffers (host_staging.h); downloads and device-to-device
  // copies are ordered after all queued work on the backend's stream.
  // During a graph capture (graph.h) only device-to-device copies are recorded; a host transfer is
  // refused with an error naming the graph.
  a.copy = [](void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
    bind_thread_to_device();
    if (src_device.is_cpu() && dst_device.is_cuda()) {
      refuse_during_capture("upload of " + std::to_string(bytes) + " bytes to the device",
                            "a captured copy would read the host buffer again at every replay; copy new inputs "
                            "into the graph's static input before replay()");
      staged_upload(dst, src, bytes);
    } else if (dst_device.is_cpu()) {
      refuse_during_capture("download of " + std::to_string(bytes) +
                                " bytes to the host (Tensor::item, to_vector, to(cpu))",
                            "nothing has run during a capture; read the result after replay()");
      device_copy(dst, src, bytes);
    } else {
      device_to_device_copy(dst, src, bytes);
    }
  };
  a.zero = [](void* dst, std::size_t bytes) {
    bind_thread_to_device();
    device_zero(dst, bytes);
  };
  register_device_allocator(std::move(a));
  ops::register_cuda_backend(the_backend());
}

// Gradient sums over the ranks on the GPU (NCCL), for train/train_loop.cpp. Only in a real-GPU
// build that found nccl.h; AE_NCCL=off keeps the host MPI all-reduce (a way round a broken NCCL
// installation). The communicator is made at the first sum, which every rank reaches together.
void register_device_allreduce(const DeviceInfo& info) {
  if (info.emulated || !nccl_available()) return;
  const char* off = std::getenv("AE_NCCL");
  if (off != nullptr && std::string(off) == "off") {
    AE_INFO("AE_NCCL=off: gradients are summed over the ranks through host memory with MPI");
    return;
  }
  dist::DeviceAllReduce r;
  r.name = "NCCL";
  r.sum = [](const std::vector<Tensor*>& tensors, const std::string& what) { world_gradient_sum(tensors, what); };
  dist::set_device_allreduce(DeviceKind::cuda, std::move(r));
}

DeviceInfo probe() {
  DeviceInfo info;
#if defined(AE_EMULATED_DEVICE)
  // One emulated device: every rank of an emulated run shares it (local rank modulo 1).
  try {
    info.index = dist::choose_device(g_requested.load(), dist::active(), dist::local_rank(), 1);
  } catch (const Error& e) {
    info.reason = std::string(e.what()) + " (the emulated device is cuda:0)";
    return info;
  }
  info.usable = true;
  info.emulated = true;
  info.name = "emulated device (CPU fibers)";
  info.model = "emulated device";
#else
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    info.reason = status != cudaSuccess ? std::string("no usable CUDA driver or GPU: ") + cudaGetErrorString(status)
                                        : std::string("no CUDA GPU found");
    return info;
  }
  try {
    info.index = dist::choose_device(g_requested.load(), dist::active(), dist::local_rank(), count);
  } catch (const Error& e) {
    info.reason = e.what();
    return info;
  }
  AE_CUDA_CHECK(cudaSetDevice(info.index));
  cudaDeviceProp prop{};
  AE_CUDA_CHECK(cudaGetDeviceProperties(&prop, info.index));
  info.compute_capability = prop.major * 10 + prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.model = prop.name;
  if (prop.major < 8) {
    info.reason = "cuda:" + std::to_string(info.index) + " " + prop.name + " is sm_" +
                  std::to_string(info.compute_capability) + "; aesthete's kernels need sm_80 or newer";
    return info;
  }
  std::ostringstream os;
  os << prop.name << " (sm_" << info.compute_capability << ", " << info.sm_count << " SMs)";
  info.name = os.str();
  info.usable = true;
#endif
  return info;
}

// True once initialize() has run (request_device() after it must agree with its choice).
std::atomic<bool> g_initialized{false};

}  // namespace

void request_device(int index) {
  AE_CHECK(index >= 0, "request_device: device index " << index << " is negative");
  if (g_initialized.load()) {
    const DeviceInfo& info = initialize();
    AE_CHECK(!info.usable || info.index == index,
             "device cuda:" << index << " requested after this process started on cuda:" << info.index
                            << "; a process uses one CUDA device, chosen at its first use");
    return;
  }
  g_requested.store(index);
}

const DeviceInfo& initialize() {
  static const DeviceInfo info = [] {
    DeviceInfo i = probe();
    g_index.store(i.index);
    g_initialized.store(true);
    if (i.usable) {
      register_device();
      dist::set_device_label("cuda:" + std::to_string(i.index), i.model);
      register_device_allreduce(i);
    }
    return i;
  }();
  return info;
}

int device_index() { return g_index.load(); }

void bind_thread_to_device() {
#if !defined(AE_EMULATED_DEVICE)
  // -1: this thread has not set its device yet (a new host thread's current device is 0).
  thread_local int bound = -1;
  const int index = g_index.load();
  if (bound != index) {
    AE_CUDA_CHECK(cudaSetDevice(index));
    bound = index;
  }
#endif
}

void synchronize() {
  refuse_during_capture("synchronize()", "a host synchronisation cannot be part of a graph (and nothing has run)");
#if !defined(AE_EMULATED_DEVICE)
  if (initialize().usable) {
    bind_thread_to_device();
    AE_CUDA_CHECK(cudaDeviceSynchronize());
  }
#endif
}

}  // namespace ae::cuda

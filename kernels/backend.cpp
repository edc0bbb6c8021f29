#include "kernels/backend.h"

namespace ae::ops {

const Backend& cpu_backend();  // kernels/cpu/cpu_backend.cpp

namespace {
const Backend* g_cuda_backend = nullptr;
}

void register_cuda_backend(const Backend* backend) { g_cuda_backend = backend; }
const Backend* cuda_backend() { return g_cuda_backend; }

const Backend& backend_for(const char* op, Device device) {
  if (device.is_cpu()) return cpu_backend();
  AE_CHECK(g_cuda_backend != nullptr,
           op << ": no backend for device " << device.str() << " (this build has no usable CUDA device)");
  return *g_cuda_backend;
}

const Backend& backend_for(const char* op, std::initializer_list<const Tensor*> tensors) {
  check_same_device(op, tensors);
  for (const Tensor* t : tensors) {
    if (t && t->defined()) return backend_for(op, t->device());
  }
  AE_FAIL(op << ": called without any defined tensor");
}

}  // namespace ae::ops

#include "kernels/cuda/raw_memory.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/graph.h"

namespace ae::cuda {

#if defined(AE_EMULATED_DEVICE)
void* raw_alloc(std::size_t bytes) { return std::aligned_alloc(256, (bytes + 255) / 256 * 256); }
void raw_free(void* p) noexcept { std::free(p); }
void raw_copy(void* dst, const void* src, std::size_t bytes) { std::memmove(dst, src, bytes); }
void raw_fill(void* dst, unsigned char value, std::size_t bytes) { std::memset(dst, value, bytes); }
#else
// During a graph capture these run for the allocator (growing the graph's pool, red zones) under
// the Relaxed capture mode (graph.h): they are not part of the graph, and they execute at once.
void* raw_alloc(std::size_t bytes) {
  const RelaxedCaptureScope relaxed;
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the sticky-free error so later checks do not see it
    return nullptr;
  }
  AE_CUDA_CHECK(status);
  return p;
}
void raw_free(void* p) noexcept { (void)cudaFree(p); }
void raw_copy(void* dst, const void* src, std::size_t bytes) {
  const RelaxedCaptureScope relaxed;
  AE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}
void raw_fill(void* dst, unsigned char value, std::size_t bytes) {
  const RelaxedCaptureScope relaxed;
  AE_CUDA_CHECK(cudaMemset(dst, value, bytes));
}
#endif

}  // namespace ae::cuda

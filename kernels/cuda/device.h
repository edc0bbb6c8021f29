#pragma once
// The one header every kernel source includes first. It selects the dialect: nvcc and the CUDA
// runtime for a real GPU, or the emulated device (kernels/emu/emu.h) when AE_EMULATED_DEVICE is
// defined, so every line of kernel code is shared by both builds. Rules for kernel code:
//   - static shared arrays:  AE_SHARED(float, tile, 64 * 33);   (1-D, compile-time count)
//   - dynamic shared memory: float* buf = ae::cuda::dynamic_shared<float>();
//   - launches:              AE_LAUNCH(kernel, grid, block, shared_bytes, stream, args...)
//   - tensor-core / async-copy instructions only through the wrappers of kernels/cuda/mma.h.
#include <cstddef>
#include <cstdint>

#if defined(AE_EMULATED_DEVICE)
#include "kernels/emu/emu.h"

// Each block gets its own array, poisoned at block start; `count` must be a constant expression
// as for a real __shared__ array.
#define AE_SHARED(type, name, count)                                          \
  static constexpr std::size_t ae_shared_count_##name = (count);             \
  static const char ae_shared_key_##name = 0;                                 \
  type* const name = static_cast<type*>(                                      \
      ::ae::emu::static_shared(&ae_shared_key_##name, sizeof(type) * ae_shared_count_##name))

namespace ae::cuda {
using Stream = void*;
template <typename T>
inline T* dynamic_shared() {
  return static_cast<T*>(::ae::emu::dynamic_shared());
}
}  // namespace ae::cuda

#else
#include <cuda_runtime.h>

#define AE_SHARED(type, name, count) __shared__ __align__(16) type name[count]

namespace ae::cuda {
using Stream = cudaStream_t;
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char ae_dynamic_shared[];
  return reinterpret_cast<T*>(ae_dynamic_shared);
}
}  // namespace ae::cuda
#endif

// Functions usable on both sides (fragment-layout maths, index helpers).
#if defined(AE_EMULATED_DEVICE)
#define AE_HOST_DEVICE inline
#else
#define AE_HOST_DEVICE __host__ __device__ __forceinline__
#endif

namespace ae::cuda {

// Grid-stride loops over n elements: for (int64_t i = first_index(); i < n; i += index_stride()).
__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t index_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

}  // namespace ae::cuda

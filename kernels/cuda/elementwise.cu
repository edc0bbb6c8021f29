// Elementwise ops: add, scale, a += s*b, relu(a + b) (the residual join). Grid-stride loops,
// one element per thread per iteration; memory-bound, so nothing fancier is needed.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void add_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = a[i] + b[i];
}

__global__ void scale_kernel(const float* __restrict__ a, float s, float* __restrict__ y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = s * a[i];
}

// a and b may be the same tensor (a += s*a): each element reads and writes only its own index.
__global__ void add_scaled_inplace_kernel(float* a, const float* b, float s, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) a[i] = a[i] + s * b[i];
}

__global__ void add_relu_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y,
                                int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const float v = a[i] + b[i];
    y[i] = v > 0.0f ? v : 0.0f;
  }
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty(a.shape(), DType::f32, a.device());
  const int64_t n = a.numel();
  AE_LAUNCH(add_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, a.f32(), b.f32(), y.f32(), n);
  return y;
}

Tensor scale(const Tensor& a, float s) {
  Tensor y = Tensor::empty(a.shape(), DType::f32, a.device());
  const int64_t n = a.numel();
  AE_LAUNCH(scale_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, a.f32(), s, y.f32(), n);
  return y;
}

void add_inplace(Tensor& a, const Tensor& b, float s) {
  const int64_t n = a.numel();
  AE_LAUNCH(add_scaled_inplace_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, a.f32(), b.f32(),
            s, n);
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty(a.shape(), DType::f32, a.device());
  const int64_t n = a.numel();
  AE_LAUNCH(add_relu_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, a.f32(), b.f32(), y.f32(),
            n);
  return y;
}

}  // namespace ae::cuda

// Elementwise ops: add, scale, a += s*b, relu(a + b) (the residual join), the f32 <-> bf16 cast
// (runtime/bf16.h's rounding, so the bits are the CPU's). Grid-stride loops,
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

__global__ void to_bf16_kernel(const float* __restrict__ x, uint16_t* __restrict__ y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = bf16_bits_rne(__float_as_uint(x[i]));
}

__global__ void from_bf16_kernel(const uint16_t* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = __uint_as_float(f32_bits_of_bf16(x[i]));
}

}  // namespace

Tensor cast(const Tensor& x, DType to) {
  Tensor y = Tensor::empty(x.shape(), to, x.device());
  const int64_t n = x.numel();
  if (n == 0) return y;
  if (to == DType::bf16) {
    AE_LAUNCH(to_bf16_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
              static_cast<const float*>(x.f32()), reinterpret_cast<uint16_t*>(y.data<BFloat16>()), n);
  } else {
    AE_LAUNCH(from_bf16_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
              reinterpret_cast<const uint16_t*>(x.data<BFloat16>()), y.f32(), n);
  }
  return y;
}

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

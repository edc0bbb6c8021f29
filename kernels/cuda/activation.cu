// ReLU and inverted dropout. Dropout draws from the counter-based Philox stream exactly as the
// CPU backend does (element i uses counter offset + i), so both devices produce the same mask.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "runtime/philox.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void relu_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// The gradient flows where relu's output is positive (0 at the kink, as in PyTorch).
__global__ void relu_backward_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                     float* __restrict__ dx, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void dropout_forward_kernel(const float* __restrict__ x, float* __restrict__ y, uint8_t* __restrict__ mask,
                                       int64_t n, float p, float keep_scale, uint64_t seed, uint64_t offset,
                                       const int64_t* __restrict__ device_offset) {
  if (device_offset != nullptr) offset += static_cast<uint64_t>(*device_offset);
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const bool keep = p == 0.0f || philox::uniform(seed, offset + static_cast<uint64_t>(i)) >= p;
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? (p == 0.0f ? x[i] : x[i] * keep_scale) : 0.0f;
  }
}

__global__ void dropout_backward_kernel(const uint8_t* __restrict__ mask, const float* __restrict__ dy,
                                        float* __restrict__ dx, int64_t n, float keep_scale) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = mask[i] ? dy[i] * keep_scale : 0.0f;
}

}  // namespace

Tensor relu_forward(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  const int64_t n = x.numel();
  AE_LAUNCH(relu_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(), y.f32(), n);
  return y;
}

Tensor relu_backward(const Tensor& y, const Tensor& dy) {
  Tensor dx = Tensor::empty(dy.shape(), DType::f32, dy.device());
  const int64_t n = dy.numel();
  AE_LAUNCH(relu_backward_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, y.f32(), dy.f32(),
            dx.f32(), n);
  return dx;
}

DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x) {
  DropoutOut out;
  out.y = Tensor::empty(x.shape(), DType::f32, x.device());
  out.mask = Tensor::empty(x.shape(), DType::u8, x.device());
  const int64_t n = x.numel();
  const float keep_scale = 1.0f / (1.0f - p.p);  // same expression as the CPU backend
  AE_LAUNCH(dropout_forward_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(), out.y.f32(),
            out.mask.data<uint8_t>(), n, p.p, keep_scale, p.seed, p.offset,
            p.device_offset.defined() ? p.device_offset.data<int64_t>() : nullptr);
  return out;
}

Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy) {
  Tensor dx = Tensor::empty(dy.shape(), DType::f32, dy.device());
  const int64_t n = dy.numel();
  const float keep_scale = 1.0f / (1.0f - p.p);
  AE_LAUNCH(dropout_backward_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
            mask.data<uint8_t>(), dy.f32(), dx.f32(), n, keep_scale);
  return dx;
}

}  // namespace ae::cuda

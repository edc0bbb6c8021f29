// ReLU, PReLU and inverted dropout. Dropout draws from the counter-based Philox stream exactly as the
// CPU backend does (element i uses counter offset + i), so both devices produce the same mask.
#include "kernels/cuda/channel_reduce.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "runtime/philox.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void relu_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// The gradient flows where relu's output is positive (0 at the kink, as in PyTorch). Y: the stored
// output, float or BFloat16.
template <typename Y>
__global__ void relu_backward_kernel(const Y* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                     int64_t n) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = load_as_float(y, i) > 0.0f ? dy[i] : 0.0f;
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
  const dim3 grid(blocks_for(n, kThreads)), block(kThreads);
  const LaunchSite site{"relu_backward_kernel", __FILE__, __LINE__};
  if (y.dtype() == DType::bf16) {
    launch(site, &relu_backward_kernel<BFloat16>, grid, block, 0, Stream{},
           static_cast<const BFloat16*>(y.data<BFloat16>()), static_cast<const float*>(dy.f32()), dx.f32(), n);
  } else {
    launch(site, &relu_backward_kernel<float>, grid, block, 0, Stream{}, static_cast<const float*>(y.f32()),
           static_cast<const float*>(dy.f32()), dx.f32(), n);
  }
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

// ---------------------------------------------------------------- PReLU
// PReLU with one shared slope ([1]) or one slope per channel ([C], C = last dim of x), as the CPU
// backend: y = x > 0 ? x : a*x; dx = x > 0 ? dy : a*dy; dslope = sum over x <= 0 of dy*x.
// dslope is a per-slope reduction over rows: the deterministic double reduction of
// channel_reduce.h (x viewed as [numel/S, S] with S slopes), no float atomics.

namespace {

int64_t slope_channels(const Tensor& x, const Tensor& slope) { return slope.numel() == 1 ? 1 : x.dim(-1); }

__global__ void prelu_forward_kernel(const float* __restrict__ x, const float* __restrict__ slope,
                                     float* __restrict__ y, int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const float v = x[i];
    y[i] = v > 0.0f ? v : slope[i % c] * v;
  }
}

__global__ void prelu_dx_kernel(const float* __restrict__ x, const float* __restrict__ slope,
                                const float* __restrict__ dy, float* __restrict__ dx, int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = x[i] > 0.0f ? dy[i] : slope[i % c] * dy[i];
}

// The negative side (x = 0 contributes 0 either way; NaN counts as "not positive" as on the CPU).
struct DyTimesXWhereNotPositive {
  const float* __restrict__ x;
  const float* __restrict__ dy;
  int64_t c;
  __device__ __forceinline__ void operator()(int64_t r, int64_t j, double* acc) const {
    const int64_t i = r * c + j;
    if (!(x[i] > 0.0f)) acc[0] += static_cast<double>(dy[i]) * x[i];
  }
};

struct StoreSlopeGrad {
  float* __restrict__ dslope;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const {
    dslope[j] = static_cast<float>(sums[0]);
  }
};

}  // namespace

Tensor prelu_forward(const Tensor& x, const Tensor& slope) {
  const int64_t c = slope_channels(x, slope), n = x.numel();
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  if (c == 0) return y;
  AE_LAUNCH(prelu_forward_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(), slope.f32(),
            y.f32(), n, c);
  return y;
}

PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy) {
  const int64_t c = slope_channels(x, slope), n = x.numel();
  PReluGrads g{Tensor::empty(x.shape(), DType::f32, x.device()), Tensor::empty(slope.shape(), DType::f32, x.device())};
  if (c == 0) return g;
  AE_LAUNCH(prelu_dx_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(), slope.f32(),
            dy.f32(), g.dx.f32(), n, c);
  reduce_channels<1>("prelu_backward (dslope)", n / c, c, x.device(), DyTimesXWhereNotPositive{x.f32(), dy.f32(), c},
                     StoreSlopeGrad{g.dslope.f32()});
  return g;
}

}  // namespace ae::cuda

// PReLU with one shared slope ([1]) or one slope per channel ([C], C = last dim of x), as the CPU
// backend: y = x > 0 ? x : a*x; dx = x > 0 ? dy : a*dy; dslope = sum over x <= 0 of dy*x.
// dslope is a per-slope reduction over rows: the deterministic double reduction of
// channel_reduce.h (x viewed as [numel/S, S] with S slopes), no float atomics.
#include "kernels/cuda/channel_reduce.h"
#include "kernels/cuda/cuda_ops.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

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

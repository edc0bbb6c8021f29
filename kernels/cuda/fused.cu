// Fused epilogue on the device: batch norm with known statistics + optional residual add +
// optional ReLU in one memory pass (the unfused path reads and writes the activation three
// times). The per-channel scale gamma*invstd is computed exactly as batchnorm.cu's eval path
// (invstd in double, rounded once), the element formula as its normalise_kernel followed by
// elementwise.cu's add_relu, so fused and unfused agree bit for bit when nvcc contracts both
// the same way (tests/gpu/test_cuda_fused.cpp compares them with a tight tolerance).
#include <cmath>

#include "kernels/cuda/conv_stats.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void apply_scale_kernel(const float* __restrict__ gamma, const float* __restrict__ stats, bool running,
                                   double eps, float* __restrict__ scale, int64_t c) {
  for (int64_t j = first_index(); j < c; j += index_stride()) {
    const float invstd = running ? static_cast<float>(1.0 / sqrt(static_cast<double>(stats[j]) + eps)) : stats[j];
    scale[j] = gamma[j] * invstd;
  }
}

// residual may be null; relu is uniform across the grid, so the branch never diverges. x and y may
// be the same buffer (BatchNormApplyParams::in_place), hence no __restrict__ on them. R and Y, the
// residual's and y's storage, are float or BFloat16 (runtime/bf16.h: widened on load, rounded once
// on store; the arithmetic is float either way).
template <typename R, typename Y>
__global__ void batchnorm_apply_kernel(const float* x, const float* __restrict__ mean, const float* __restrict__ scale,
                                       const float* __restrict__ beta, const R* __restrict__ residual, bool relu, Y* y,
                                       int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t j = i % c;
    float v = (x[i] - mean[j]) * scale[j] + beta[j];
    if (residual) v = v + load_as_float(residual, i);
    store_from_float(y, i, relu ? (v > 0.0f ? v : 0.0f) : v);
  }
}

template <typename R, typename Y>
void launch_apply(const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& mean, const Tensor& scale,
                  const Tensor& beta, const Tensor& residual, Tensor& y) {
  const int64_t n = x.numel(), c = x.dim(-1);
  launch(LaunchSite{"batchnorm_apply_kernel", __FILE__, __LINE__}, &batchnorm_apply_kernel<R, Y>,
         dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, Stream{},
         static_cast<const float*>(x.f32()), static_cast<const float*>(mean.f32()),
         static_cast<const float*>(scale.f32()), static_cast<const float*>(beta.f32()),
         static_cast<const R*>(residual.defined() ? residual.data<R>() : nullptr), p.relu, y.data<Y>(), n, c);
}

}  // namespace

Tensor batchnorm_apply(const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) {
  const int64_t c = x.dim(-1), n = x.numel();
  const Device dev = x.device();
  const bool bf16_out = p.out_dtype == DType::bf16;
  Tensor y = p.in_place && !bf16_out ? x : Tensor::empty(x.shape(), p.out_dtype, dev);
  if (c == 0 || n == 0) return y;
  Tensor scale = Tensor::empty({c}, DType::f32, dev);
  AE_LAUNCH(apply_scale_kernel, dim3(blocks_for(c, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(gamma.f32()), static_cast<const float*>(var_or_invstd.f32()),
            p.stats == ops::BatchNormStats::running, static_cast<double>(p.eps), scale.f32(), c);
  if (residual.defined() && residual.dtype() == DType::bf16) {
    bf16_out ? launch_apply<BFloat16, BFloat16>(p, x, mean, scale, beta, residual, y)
             : launch_apply<BFloat16, float>(p, x, mean, scale, beta, residual, y);
  } else {
    bf16_out ? launch_apply<float, BFloat16>(p, x, mean, scale, beta, residual, y)
             : launch_apply<float, float>(p, x, mean, scale, beta, residual, y);
  }
  return y;
}

ops::ConvBatchNormTrainOut conv2d_batchnorm_train(const ops::Conv2dParams& conv, const ops::BatchNormParams& bn,
                                                  bool relu, const Tensor& x, const Tensor& w, const Tensor& gamma,
                                                  const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                                  const Tensor& residual, DType y_dtype) {
  ops::ConvBatchNormTrainOut out;
  const int64_t o = w.dim(0);
  const int64_t m = o > 0 ? conv.out_h(x.dim(1)) * conv.out_w(x.dim(2)) * x.dim(0) : 0;
  // Doubles in a u8 tensor (Tensor has no f64; the allocator aligns to 256 bytes).
  Tensor partials = Tensor::empty({conv_output_stats_doubles(m, o) * static_cast<int64_t>(sizeof(double))}, DType::u8,
                                  x.device());
  ConvOutputStats stats;
  stats.partials = reinterpret_cast<double*>(partials.data<uint8_t>());
  out.conv = conv2d_forward_with_stats(conv, x, w, stats);
  batchnorm_train_statistics_from_tiles(bn, stats, m, gamma, running_mean, running_var, out.save_mean,
                                        out.save_invstd);
  ops::BatchNormApplyParams apply;
  apply.stats = ops::BatchNormStats::saved;
  apply.relu = relu;
  apply.out_dtype = y_dtype;
  out.y = cuda::batchnorm_apply(apply, out.conv, gamma, beta, out.save_mean, out.save_invstd, residual);
  return out;
}

}  // namespace ae::cuda

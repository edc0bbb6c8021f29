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
// be the same buffer (BatchNormApplyParams::in_place), hence no __restrict__ on them.
__global__ void batchnorm_apply_kernel(const float* x, const float* __restrict__ mean, const float* __restrict__ scale,
                                       const float* __restrict__ beta, const float* __restrict__ residual, bool relu,
                                       float* y, int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t j = i % c;
    float v = (x[i] - mean[j]) * scale[j] + beta[j];
    if (residual) v = v + residual[i];
    y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
  }
}

}  // namespace

Tensor batchnorm_apply(const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) {
  const int64_t c = x.dim(-1), n = x.numel();
  const Device dev = x.device();
  Tensor y = p.in_place ? x : Tensor::empty(x.shape(), DType::f32, dev);
  if (c == 0 || n == 0) return y;
  Tensor scale = Tensor::empty({c}, DType::f32, dev);
  AE_LAUNCH(apply_scale_kernel, dim3(blocks_for(c, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(gamma.f32()), static_cast<const float*>(var_or_invstd.f32()),
            p.stats == ops::BatchNormStats::running, static_cast<double>(p.eps), scale.f32(), c);
  const float* r = residual.defined() ? residual.f32() : nullptr;
  AE_LAUNCH(batchnorm_apply_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(x.f32()), static_cast<const float*>(mean.f32()),
            static_cast<const float*>(scale.f32()), static_cast<const float*>(beta.f32()), r, p.relu, y.f32(), n, c);
  return y;
}

ops::ConvBatchNormTrainOut conv2d_batchnorm_train(const ops::Conv2dParams& conv, const ops::BatchNormParams& bn,
                                                  bool relu, const Tensor& x, const Tensor& w, const Tensor& gamma,
                                                  const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                                  const Tensor& residual) {
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
  out.y = cuda::batchnorm_apply(apply, out.conv, gamma, beta, out.save_mean, out.save_invstd, residual);
  return out;
}

}  // namespace ae::cuda

// Batch normalisation over every dimension but the last (channels last): x is seen as [M, C]
// with M = numel / C, exactly as the CPU backend (kernels/cpu/batchnorm_cpu.cpp), which is the
// reference these kernels follow step by step:
//   - statistics in double through the deterministic two-stage reduction of channel_reduce.h,
//     two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2;
//   - the saved mean/invstd are rounded to float once and the normalisation uses exactly those;
//   - the backward's three nearly cancelling terms are combined per element in double;
//   - synchronised BatchNorm (kernels/batchnorm_sync.h): while a reducer is installed, the
//     training forward and backward hand the same per-channel double sums, with the row count
//     appended, to it as the CPU backend does (the sum of x; the squared deviations from the
//     global mean; sum(dy*xhat) and sum(dy)), and finish with the whole batch's sums and count.
//     dgamma and dbeta stay this process's own sums.
// Arguments arrive validated by kernels/batchnorm.cpp (shapes, dtypes, M >= 2 in training).
#include <cmath>
#include <string>
#include <vector>

#include "kernels/batchnorm_sync.h"
#include "kernels/relu_mask.h"
#include "kernels/cuda/channel_reduce.h"
#include "kernels/cuda/conv_stats.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/graph.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

int64_t channels_of(const Tensor& x) { return x.dim(-1); }
int64_t rows_of(const Tensor& x) { return x.dim(-1) > 0 ? x.numel() / x.dim(-1) : 0; }

// A device buffer of n doubles (Tensor has no f64; the allocator aligns to 256 bytes).
struct DoubleBuffer {
  Tensor storage;
  double* ptr;
  DoubleBuffer(int64_t n, Device device)
      : storage(Tensor::empty({n * static_cast<int64_t>(sizeof(double))}, DType::u8, device)),
        ptr(reinterpret_cast<double*>(storage.data<uint8_t>())) {}
};

// ------------------------------------------------------------------ reduction values

struct SumX {
  const float* __restrict__ x;
  int64_t c;
  __device__ __forceinline__ void operator()(int64_t r, int64_t j, double* acc) const { acc[0] += x[r * c + j]; }
};

struct SumSquaredDeviation {
  const float* __restrict__ x;
  const double* __restrict__ mean;
  int64_t c;
  __device__ __forceinline__ void operator()(int64_t r, int64_t j, double* acc) const {
    const double d = x[r * c + j] - mean[j];
    acc[0] += d * d;
  }
};

// acc[0] += dy * xhat (-> dgamma), acc[1] += dy (-> dbeta), xhat from the float statistics.
struct SumDyXhatAndDy {
  const float* __restrict__ x;
  const float* __restrict__ dy;
  const float* __restrict__ mean;
  const float* __restrict__ invstd;
  int64_t c;
  // dy, or with a ReLU output ReLU's backward of it, read as one select (relu_backward's: dy where
  // the output > 0, else 0), so the masked gradient is never written (kernels/relu_mask.h).
  ReluMask relu = {};
  __device__ __forceinline__ void operator()(int64_t r, int64_t j, double* acc) const {
    const int64_t i = r * c + j;
    const double xhat = (static_cast<double>(x[i]) - mean[j]) * invstd[j];
    const float d = relu.through(dy, i);
    acc[0] += static_cast<double>(d) * xhat;
    acc[1] += d;
  }
};

// ------------------------------------------------------------------ per-channel finishers

struct FinishMean {
  double* __restrict__ mean;
  double rows;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const { mean[j] = sums[0] / rows; }
};

// Biased variance for normalising, the saved float statistics, the folded scale gamma*invstd and
// PyTorch's running update (unbiased variance into running_var).
struct FinishTrainStatistics {
  const double* __restrict__ mean;
  const float* __restrict__ gamma;
  float* __restrict__ save_mean;
  float* __restrict__ save_invstd;
  float* __restrict__ scale;
  float* __restrict__ running_mean;
  float* __restrict__ running_var;
  double rows;
  double eps;
  double momentum;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const { finish(j, mean[j], sums[0]); }
  // From the channel's mean and squared deviations from it, however they were summed.
  __device__ __forceinline__ void finish(int64_t j, double mu, double squared_deviations) const {
    const double var = squared_deviations / rows;
    save_mean[j] = static_cast<float>(mu);
    const float invstd = static_cast<float>(1.0 / sqrt(var + eps));
    save_invstd[j] = invstd;
    scale[j] = gamma[j] * invstd;
    const double unbias = rows / (rows - 1.0);
    running_mean[j] = static_cast<float>((1.0 - momentum) * running_mean[j] + momentum * mu);
    running_var[j] = static_cast<float>((1.0 - momentum) * running_var[j] + momentum * var * unbias);
  }
};

// The coefficients of dx = k * (dy - mean_dy - xhat * mean_dy_xhat) from sum(dy*xhat), sum(dy).
struct FinishDxCoefficients {
  const float* __restrict__ gamma;
  const float* __restrict__ invstd;
  double* __restrict__ coef;  // [3][C]: k, mean_dy, mean_dy_xhat
  int64_t c;
  double rows;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const {
    coef[j] = static_cast<double>(gamma[j]) * invstd[j];
    coef[c + j] = sums[1] / rows;
    coef[2 * c + j] = sums[0] / rows;
  }
};

struct FinishAffineGrads {
  float* __restrict__ dgamma;
  float* __restrict__ dbeta;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const {
    dgamma[j] = static_cast<float>(sums[0]);
    dbeta[j] = static_cast<float>(sums[1]);
  }
};

// dgamma, dbeta, and the coefficients of dx, all from this process's sums.
struct FinishTrainGrads {
  FinishAffineGrads affine;
  FinishDxCoefficients dx;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const {
    affine(j, sums);
    dx(j, sums);
  }
};

// ------------------------------------------------------------------ synchronised BatchNorm

// Keeps the K per-channel totals, as sums[k * C + j] (the layout the CPU backend hands to the
// reducer), for the host to reduce over the processes.
template <int K>
struct StoreSums {
  double* __restrict__ sums;
  int64_t c;
  __device__ __forceinline__ void operator()(int64_t j, const double* totals) const {
    for (int k = 0; k < K; ++k) sums[k * c + j] = totals[k];
  }
};

// This process's dgamma and dbeta, and its sums kept for the reducer.
struct FinishAffineGradsAndStore {
  FinishAffineGrads affine;
  StoreSums<2> store;
  __device__ __forceinline__ void operator()(int64_t j, const double* sums) const {
    affine(j, sums);
    store(j, sums);
  }
};

// Runs a Finish functor on per-channel sums already totalled (sums[k * C + j], after the reducer),
// as channel_totals_kernel runs it on the totals it adds up itself.
template <int K, class Finish>
__global__ void finish_channels_kernel(const double* __restrict__ sums, int64_t c, Finish finish) {
  for (int64_t j = first_index(); j < c; j += index_stride()) {
    double s[K];
    for (int k = 0; k < K; ++k) s[k] = sums[k * c + j];
    finish(j, s);
  }
}

template <int K, class Finish>
void finish_channels(const char* op, const double* sums, int64_t c, const Finish& finish) {
  launch(LaunchSite{op, __FILE__, __LINE__}, &finish_channels_kernel<K, Finish>,
         dim3(blocks_for(c, kChannelReduceThreads)), dim3(kChannelReduceThreads), 0, Stream{}, sums, c, finish);
}

// The `n` device sums, with this process's row count appended, through the installed reducer
// (kernels/cpu/batchnorm_cpu.cpp's sync_sums, on device memory): in place, the whole batch's sums
// on return; returns the whole batch's row count. The round trip is a synchronising download and
// upload of n+1 doubles (n = C or 2C, a few KiB for C <= 512 channels) per reduction: the reducer
// is a host collective (MPI) and needs the values before the next kernel may use them.
int64_t sync_sums(const ops::ChannelSumReducer& reduce, double* sums, int64_t n, int64_t rows, const char* what) {
  refuse_during_capture(std::string(what) + " (synchronised BatchNorm statistics through the host)",
                        "a host collective between kernels cannot be part of a graph");
  std::vector<double> host(static_cast<std::size_t>(n + 1));
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(double);
  device_copy(host.data(), sums, bytes);  // after the reduction kernels: same stream, synchronous copy
  host.back() = static_cast<double>(rows);
  reduce(host.data(), n + 1);
  const auto total = static_cast<int64_t>(host.back());
  AE_CHECK(total >= 2, what << ": the batch has " << total << " value(s) per channel over all processes; "
                            << "training-mode batch norm needs at least 2");
  device_copy(sums, host.data(), bytes);
  return total;
}

// ------------------------------------------------------------------ elementwise kernels

// Eval mode: invstd = 1/sqrt(running_var + eps) in double, rounded once; scale = gamma * invstd.
__global__ void running_scale_kernel(const float* __restrict__ gamma, const float* __restrict__ running_var,
                                     double eps, float* __restrict__ invstd, float* __restrict__ scale, int64_t c) {
  for (int64_t j = first_index(); j < c; j += index_stride()) {
    const float s = static_cast<float>(1.0 / sqrt(static_cast<double>(running_var[j]) + eps));
    invstd[j] = s;
    scale[j] = gamma[j] * s;
  }
}

// y = (x - mean[c]) * scale[c] + beta[c]; (x - mean) first, as on the CPU, to avoid cancellation.
__global__ void normalise_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ scale, const float* __restrict__ beta, float* __restrict__ y,
                                 int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t j = i % c;
    y[i] = (x[i] - mean[j]) * scale[j] + beta[j];
  }
}

__global__ void train_dx_kernel(const float* __restrict__ x, const float* __restrict__ dy, ReluMask relu,
                                const float* __restrict__ mean,
                                const float* __restrict__ invstd, const double* __restrict__ coef,
                                float* __restrict__ dx, int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t j = i % c;
    const double xhat = (static_cast<double>(x[i]) - mean[j]) * invstd[j];
    dx[i] = static_cast<float>(coef[j] * (relu.through(dy, i) - coef[c + j] - xhat * coef[2 * c + j]));
  }
}

__global__ void scale_by_channel_kernel(const float* __restrict__ dy, const float* __restrict__ scale,
                                        float* __restrict__ dx, int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = dy[i] * scale[i % c];
}

Tensor channel_vector(int64_t c, Device device) { return Tensor::empty({c}, DType::f32, device); }

// The training statistics from a convolution epilogue's per-tile partials (conv_stats.h): per
// channel, mean = sum_t S_t / M, then the squared deviations from it as
// sum_t [Q_t + n_t (S_t / n_t - mean)^2], both over the tiles in order, and FinishTrainStatistics
// as after batchnorm_forward_train's own two passes.
__global__ void statistics_from_tiles_kernel(const double* __restrict__ partials, int64_t tiles, int64_t tile_rows,
                                             int64_t c, FinishTrainStatistics finish) {
  const auto rows = static_cast<int64_t>(finish.rows);
  for (int64_t j = first_index(); j < c; j += index_stride()) {
    double sum = 0.0;
    for (int64_t t = 0; t < tiles; ++t) sum += partials[t * 2 * c + j];
    const double mu = sum / finish.rows;
    double sq = 0.0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t first = t * tile_rows;
      const double n_t = static_cast<double>(rows - first < tile_rows ? rows - first : tile_rows);
      const double d = partials[t * 2 * c + j] / n_t - mu;
      sq += partials[(t * 2 + 1) * c + j] + n_t * d * d;
    }
    finish.finish(j, mu, sq);
  }
}

}  // namespace

void batchnorm_train_statistics_from_tiles(const ops::BatchNormParams& p, const ConvOutputStats& stats, int64_t m,
                                           const Tensor& gamma, Tensor& running_mean, Tensor& running_var,
                                           Tensor& save_mean, Tensor& save_invstd) {
  const int64_t c = gamma.numel();
  const Device dev = gamma.device();
  save_mean = channel_vector(c, dev);
  save_invstd = channel_vector(c, dev);
  if (c == 0) return;
  AE_CHECK(stats.tile_rows > 0 && m >= 2, "batchnorm_train_statistics_from_tiles: " << m << " rows in tiles of "
                                                                                     << stats.tile_rows);
  Tensor scale = channel_vector(c, dev);  // FinishTrainStatistics writes it; batchnorm_apply forms its own
  const int64_t tiles = (m + stats.tile_rows - 1) / stats.tile_rows;
  AE_LAUNCH(statistics_from_tiles_kernel, dim3(blocks_for(c, kChannelReduceThreads)), dim3(kChannelReduceThreads), 0,
            nullptr, static_cast<const double*>(stats.partials), tiles, stats.tile_rows, c,
            FinishTrainStatistics{nullptr, gamma.f32(), save_mean.f32(), save_invstd.f32(), scale.f32(),
                                  running_mean.f32(), running_var.f32(), static_cast<double>(m),
                                  static_cast<double>(p.eps), static_cast<double>(p.momentum)});
}

BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, Tensor& running_mean, Tensor& running_var) {
  const int64_t m = rows_of(x), c = channels_of(x), n = x.numel();
  const Device dev = x.device();
  BatchNormTrainOut out{Tensor::empty(x.shape(), DType::f32, dev), channel_vector(c, dev), channel_vector(c, dev)};
  if (c == 0) return out;
  DoubleBuffer mean(c, dev);
  Tensor scale = channel_vector(c, dev);
  const ops::ChannelSumReducer* reduce = ops::batchnorm_sync_reducer();
  if (reduce == nullptr) {
    reduce_channels<1>("batchnorm_forward_train (mean)", m, c, dev, SumX{x.f32(), c},
                       FinishMean{mean.ptr, static_cast<double>(m)});
    reduce_channels<1>("batchnorm_forward_train (variance)", m, c, dev, SumSquaredDeviation{x.f32(), mean.ptr, c},
                       FinishTrainStatistics{mean.ptr, gamma.f32(), out.save_mean.f32(), out.save_invstd.f32(),
                                             scale.f32(), running_mean.f32(), running_var.f32(),
                                             static_cast<double>(m), static_cast<double>(p.eps),
                                             static_cast<double>(p.momentum)});
  } else {
    // Synchronised: the same two passes, each pass's sums reduced over the processes before
    // they are used, so the mean, the variance and the unbiasing M are the whole batch's.
    DoubleBuffer sums(c, dev);
    reduce_channels<1>("batchnorm_forward_train (mean)", m, c, dev, SumX{x.f32(), c}, StoreSums<1>{sums.ptr, c});
    const int64_t total = sync_sums(*reduce, sums.ptr, c, m, "batchnorm_forward_train");
    finish_channels<1>("batchnorm_forward_train (mean)", sums.ptr, c, FinishMean{mean.ptr, static_cast<double>(total)});
    reduce_channels<1>("batchnorm_forward_train (variance)", m, c, dev, SumSquaredDeviation{x.f32(), mean.ptr, c},
                       StoreSums<1>{sums.ptr, c});
    sync_sums(*reduce, sums.ptr, c, m, "batchnorm_forward_train");
    finish_channels<1>("batchnorm_forward_train (variance)", sums.ptr, c,
                       FinishTrainStatistics{mean.ptr, gamma.f32(), out.save_mean.f32(), out.save_invstd.f32(),
                                             scale.f32(), running_mean.f32(), running_var.f32(),
                                             static_cast<double>(total), static_cast<double>(p.eps),
                                             static_cast<double>(p.momentum)});
  }
  AE_LAUNCH(normalise_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(),
            static_cast<const float*>(out.save_mean.f32()), static_cast<const float*>(scale.f32()), beta.f32(),
            out.y.f32(), n, c);
  return out;
}

Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var) {
  const int64_t c = channels_of(x), n = x.numel();
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), DType::f32, dev);
  if (c == 0) return y;
  Tensor invstd = channel_vector(c, dev), scale = channel_vector(c, dev);
  AE_LAUNCH(running_scale_kernel, dim3(blocks_for(c, kThreads)), dim3(kThreads), 0, nullptr, gamma.f32(),
            running_var.f32(), static_cast<double>(p.eps), invstd.f32(), scale.f32(), c);
  AE_LAUNCH(normalise_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(), running_mean.f32(),
            static_cast<const float*>(scale.f32()), beta.f32(), y.f32(), n, c);
  return y;
}

BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor& relu_y) {
  const int64_t m = rows_of(x), c = channels_of(x), n = x.numel();
  const Device dev = x.device();
  BatchNormGrads g{Tensor::empty(x.shape(), DType::f32, dev), channel_vector(c, dev), channel_vector(c, dev)};
  if (c == 0) return g;
  DoubleBuffer coef(3 * c, dev);
  const ReluMask relu = relu_mask_of(relu_y);
  const SumDyXhatAndDy value{x.f32(), dy.f32(), save_mean.f32(), save_invstd.f32(), c, relu};
  const FinishAffineGrads affine{g.dgamma.f32(), g.dbeta.f32()};
  const ops::ChannelSumReducer* reduce = ops::batchnorm_sync_reducer();
  if (reduce == nullptr) {
    reduce_channels<2>("batchnorm_backward_train", m, c, dev, value,
                       FinishTrainGrads{affine, FinishDxCoefficients{gamma.f32(), save_invstd.f32(), coef.ptr, c,
                                                                     static_cast<double>(m)}});
  } else {
    // Synchronised: dx uses the whole batch's sum(dy*xhat) and sum(dy); dgamma and dbeta stay
    // this process's (they are summed over the processes with the other gradients).
    DoubleBuffer sums(2 * c, dev);
    reduce_channels<2>("batchnorm_backward_train", m, c, dev, value, FinishAffineGradsAndStore{affine, {sums.ptr, c}});
    const int64_t total = sync_sums(*reduce, sums.ptr, 2 * c, m, "batchnorm_backward_train");
    finish_channels<2>("batchnorm_backward_train", sums.ptr, c,
                       FinishDxCoefficients{gamma.f32(), save_invstd.f32(), coef.ptr, c, static_cast<double>(total)});
  }
  AE_LAUNCH(train_dx_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, x.f32(), dy.f32(), relu,
            save_mean.f32(), save_invstd.f32(), static_cast<const double*>(coef.ptr), g.dx.f32(), n, c);
  return g;
}

BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy,
                                       const Tensor& gamma, const Tensor& running_mean, const Tensor& running_var) {
  const int64_t m = rows_of(x), c = channels_of(x), n = x.numel();
  const Device dev = x.device();
  BatchNormGrads g{Tensor::empty(x.shape(), DType::f32, dev), channel_vector(c, dev), channel_vector(c, dev)};
  if (c == 0) return g;
  Tensor invstd = channel_vector(c, dev), scale = channel_vector(c, dev);
  AE_LAUNCH(running_scale_kernel, dim3(blocks_for(c, kThreads)), dim3(kThreads), 0, nullptr, gamma.f32(),
            running_var.f32(), static_cast<double>(p.eps), invstd.f32(), scale.f32(), c);
  reduce_channels<2>("batchnorm_backward_eval", m, c, dev,
                     SumDyXhatAndDy{x.f32(), dy.f32(), running_mean.f32(), invstd.f32(), c},
                     FinishAffineGrads{g.dgamma.f32(), g.dbeta.f32()});
  // The statistics are constants in eval mode: BN is a per-channel affine map.
  AE_LAUNCH(scale_by_channel_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, dy.f32(),
            static_cast<const float*>(scale.f32()), g.dx.f32(), n, c);
  return g;
}

}  // namespace ae::cuda

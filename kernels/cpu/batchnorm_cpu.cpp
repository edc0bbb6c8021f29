// CPU batch normalisation over every dimension but the last (channels last): x is seen as
// [M, C] with M = numel / C. Per-channel sums are accumulated in double through the
// deterministic row-block reduction of channel_reduce.h; elementwise work is float.
// Arguments arrive validated by kernels/batchnorm.cpp (shapes, dtypes, M >= 2 in training).
#include <cmath>
#include <vector>

#include "kernels/batchnorm_sync.h"
#include "kernels/relu_mask.h"
#include "kernels/cpu/channel_reduce.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {
namespace {

// x as a [rows, channels] matrix: channels is the last dimension, rows all the others.
int64_t channels_of(const Tensor& x) { return x.dim(-1); }
int64_t rows_of(const Tensor& x) { return x.dim(-1) > 0 ? x.numel() / x.dim(-1) : 0; }

// y = (x - mean[c]) * scale[c] + beta[c], with scale = gamma * invstd folded per channel.
// (x - mean) first: folding the mean into the shift would cancel badly when |mean| >> std.
Tensor normalise(const Tensor& x, const std::vector<float>& mean, const std::vector<float>& scale, const float* beta) {
  const int64_t m = rows_of(x), c = channels_of(x);
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  const float* mp = mean.data();
  const float* sp = scale.data();
  parallel_rows(m, min_rows_for(c), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = xp + r * c;
      float* yr = yp + r * c;
      for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - mp[j]) * sp[j] + beta[j];
    }
  });
  return y;
}

// dgamma[c] = sum(dy * (x - mean) * invstd), dbeta[c] = sum(dy), both in double.
struct AffineGradSums {
  std::vector<double> sum_dy_xhat, sum_dy;
};
// relu: none, or a ReLU output whose backward is applied to dy as it is read (kernels/relu_mask.h).
AffineGradSums affine_grad_sums(const Tensor& x, const Tensor& dy, const std::vector<float>& mean,
                                const std::vector<float>& invstd, const ReluMask relu = {}) {
  const int64_t m = rows_of(x), c = channels_of(x);
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  std::vector<double> sums(static_cast<std::size_t>(2 * c));
  reduce_rows<2>(
      m, c,
      [&](int64_t r, double* acc) {
        const float* xr = xp + r * c;
        for (int64_t j = 0; j < c; ++j) {
          const double xhat = (static_cast<double>(xr[j]) - mean[j]) * invstd[j];
          const float d = relu.through(dyp, r * c + j);
          acc[j] += static_cast<double>(d) * xhat;
          acc[c + j] += d;
        }
      },
      sums.data());
  return {std::vector<double>(sums.begin(), sums.begin() + c), std::vector<double>(sums.begin() + c, sums.end())};
}

// Synchronised BatchNorm (kernels/batchnorm_sync.h): `sums` with the row count appended, summed
// over the processes by the installed reducer; returns the whole batch's row count. Without a
// reducer nothing changes and the count is this process's.
int64_t sync_sums(std::vector<double>& sums, int64_t rows, const char* what) {
  const ops::ChannelSumReducer* reduce = ops::batchnorm_sync_reducer();
  if (reduce == nullptr) return rows;
  sums.push_back(static_cast<double>(rows));
  (*reduce)(sums.data(), static_cast<int64_t>(sums.size()));
  const auto total = static_cast<int64_t>(sums.back());
  sums.pop_back();
  AE_CHECK(total >= 2, what << ": the batch has " << total << " value(s) per channel over all processes; "
                            << "training-mode batch norm needs at least 2");
  return total;
}

Tensor channel_tensor(const std::vector<double>& values) {
  Tensor t = Tensor::empty({static_cast<int64_t>(values.size())});
  float* p = t.f32();
  for (std::size_t i = 0; i < values.size(); ++i) p[i] = static_cast<float>(values[i]);
  return t;
}

std::vector<float> copy_channels(const Tensor& t) { return t.to_vector(); }

// 1/sqrt(running_var + eps) per channel, computed in double and rounded once.
std::vector<float> running_invstd(const Tensor& running_var, float eps) {
  std::vector<float> v = running_var.to_vector();
  for (float& e : v) e = static_cast<float>(1.0 / std::sqrt(static_cast<double>(e) + eps));
  return v;
}

}  // namespace

BatchNormTrainOut batchnorm_forward_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, Tensor& running_mean, Tensor& running_var) {
  const int64_t m = rows_of(x), c = channels_of(x);
  const float* xp = x.f32();

  // Two passes (mean, then squared deviations) rather than E[x^2]-E[x]^2, which loses the
  // variance to cancellation when |mean| >> std.
  std::vector<double> mean(static_cast<std::size_t>(c));
  reduce_rows<1>(
      m, c,
      [&](int64_t r, double* acc) {
        const float* xr = xp + r * c;
        for (int64_t j = 0; j < c; ++j) acc[j] += xr[j];
      },
      mean.data());
  const int64_t total = sync_sums(mean, m, "batchnorm_forward_train");  // m, or the whole batch's rows
  for (double& v : mean) v /= static_cast<double>(total);

  std::vector<double> var(static_cast<std::size_t>(c));
  reduce_rows<1>(
      m, c,
      [&](int64_t r, double* acc) {
        const float* xr = xp + r * c;
        for (int64_t j = 0; j < c; ++j) {
          const double d = xr[j] - mean[j];
          acc[j] += d * d;
        }
      },
      var.data());
  sync_sums(var, m, "batchnorm_forward_train");
  for (double& v : var) v /= static_cast<double>(total);  // biased: used for normalising

  BatchNormTrainOut out;
  out.save_mean = channel_tensor(mean);
  std::vector<double> invstd(static_cast<std::size_t>(c));
  for (int64_t j = 0; j < c; ++j) invstd[j] = 1.0 / std::sqrt(var[j] + p.eps);
  out.save_invstd = channel_tensor(invstd);

  // Normalise with exactly the saved (float) statistics, so backward sees the same xhat.
  const std::vector<float> mean_f = copy_channels(out.save_mean);
  const std::vector<float> invstd_f = copy_channels(out.save_invstd);
  std::vector<float> scale(static_cast<std::size_t>(c));
  const float* g = gamma.f32();
  for (int64_t j = 0; j < c; ++j) scale[j] = g[j] * invstd_f[j];
  out.y = normalise(x, mean_f, scale, beta.f32());

  // PyTorch's running update: the unbiased variance M/(M-1) * var goes into running_var.
  float* rm = running_mean.f32();
  float* rv = running_var.f32();
  const double mom = p.momentum;
  const double unbias = static_cast<double>(total) / static_cast<double>(total - 1);
  for (int64_t j = 0; j < c; ++j) {
    rm[j] = static_cast<float>((1.0 - mom) * rm[j] + mom * mean[j]);
    rv[j] = static_cast<float>((1.0 - mom) * rv[j] + mom * var[j] * unbias);
  }
  return out;
}

Tensor batchnorm_forward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var) {
  const int64_t c = channels_of(x);
  const std::vector<float> invstd = running_invstd(running_var, p.eps);
  std::vector<float> scale(static_cast<std::size_t>(c));
  const float* g = gamma.f32();
  for (int64_t j = 0; j < c; ++j) scale[j] = g[j] * invstd[j];
  return normalise(x, copy_channels(running_mean), scale, beta.f32());
}

BatchNormGrads batchnorm_backward_train(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                                        const Tensor& save_invstd, const Tensor& relu_y) {
  const int64_t m = rows_of(x), c = channels_of(x);
  const std::vector<float> mean = copy_channels(save_mean);
  const std::vector<float> invstd = copy_channels(save_invstd);
  const ReluMask relu = relu_mask_of(relu_y);
  const AffineGradSums s = affine_grad_sums(x, dy, mean, invstd, relu);
  // Synchronised: dx uses the whole batch's sums; dgamma and dbeta below stay this process's.
  std::vector<double> both(s.sum_dy_xhat);
  both.insert(both.end(), s.sum_dy.begin(), s.sum_dy.end());
  const int64_t total = sync_sums(both, m, "batchnorm_backward_train");

  // dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)), per element in double: the
  // three terms nearly cancel when dy is close to affine in xhat.
  std::vector<double> k(static_cast<std::size_t>(c)), mean_dy(k.size()), mean_dy_xhat(k.size());
  const float* g = gamma.f32();
  for (int64_t j = 0; j < c; ++j) {
    k[j] = static_cast<double>(g[j]) * invstd[j];
    mean_dy[j] = both[static_cast<std::size_t>(c + j)] / static_cast<double>(total);
    mean_dy_xhat[j] = both[static_cast<std::size_t>(j)] / static_cast<double>(total);
  }
  BatchNormGrads grads;
  grads.dx = Tensor::empty(x.shape());
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  float* dxp = grads.dx.f32();
  parallel_rows(m, min_rows_for(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < c; ++j) {
        const int64_t i = r * c + j;
        const double xhat = (static_cast<double>(xp[i]) - mean[j]) * invstd[j];
        dxp[i] = static_cast<float>(k[j] * (relu.through(dyp, i) - mean_dy[j] - xhat * mean_dy_xhat[j]));
      }
    }
  });
  grads.dgamma = channel_tensor(s.sum_dy_xhat);
  grads.dbeta = channel_tensor(s.sum_dy);
  return grads;
}

BatchNormGrads batchnorm_backward_eval(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                       const Tensor& running_mean, const Tensor& running_var) {
  const int64_t m = rows_of(x), c = channels_of(x);
  const std::vector<float> mean = copy_channels(running_mean);
  const std::vector<float> invstd = running_invstd(running_var, p.eps);
  const AffineGradSums s = affine_grad_sums(x, dy, mean, invstd);

  // The statistics are constants here, so BN is a per-channel affine map: dx = dy*gamma*invstd.
  std::vector<float> scale(static_cast<std::size_t>(c));
  const float* g = gamma.f32();
  for (int64_t j = 0; j < c; ++j) scale[j] = g[j] * invstd[j];
  BatchNormGrads grads;
  grads.dx = Tensor::empty(x.shape());
  const float* dyp = dy.f32();
  float* dxp = grads.dx.f32();
  const float* sp = scale.data();
  parallel_rows(m, min_rows_for(c), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < c; ++j) dxp[r * c + j] = dyp[r * c + j] * sp[j];
    }
  });
  grads.dgamma = channel_tensor(s.sum_dy_xhat);
  grads.dbeta = channel_tensor(s.sum_dy);
  return grads;
}

}  // namespace ae::cpu

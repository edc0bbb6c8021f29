// CPU fused epilogue: batch norm with known statistics + optional residual add + optional ReLU
// in one pass. Each step is the same float operation as the unfused ops (batchnorm_cpu.cpp's
// normalise, then elementwise_cpu.cpp's add_relu or activation_cpu.cpp's relu), so the fused
// and unfused results are equal bit for bit.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {

Tensor batchnorm_apply(const ops::BatchNormApplyParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const Tensor& mean, const Tensor& var_or_invstd, const Tensor& residual) {
  const int64_t c = x.dim(-1), rows = c > 0 ? x.numel() / c : 0;
  // scale = gamma * invstd per channel; invstd from the running variance in double, rounded once.
  std::vector<float> scale(static_cast<std::size_t>(c));
  const float* g = gamma.f32();
  const float* s = var_or_invstd.f32();
  for (int64_t j = 0; j < c; ++j) {
    const float invstd = p.stats == ops::BatchNormStats::running
                             ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(s[j]) + p.eps))
                             : s[j];
    scale[j] = g[j] * invstd;
  }
  Tensor y = p.in_place ? x : Tensor::empty(x.shape());  // element i is read before it is written
  const float* xp = x.f32();
  const float* rp = residual.defined() ? residual.f32() : nullptr;
  const float* mp = mean.f32();
  const float* bp = beta.f32();
  const float* sp = scale.data();
  float* yp = y.f32();
  const bool relu = p.relu;
  parallel_rows(rows, min_rows_for(c), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < c; ++j) {
        const int64_t i = r * c + j;
        float v = (xp[i] - mp[j]) * sp[j] + bp[j];
        if (rp) v = v + rp[i];
        yp[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
      }
    }
  });
  return y;
}

}  // namespace ae::cpu

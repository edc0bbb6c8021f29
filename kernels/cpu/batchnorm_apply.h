#pragma once
// The element formula and per-channel scale of the eval / fused BatchNorm (ops::batchnorm_apply),
// in one place for the op itself (fused_cpu.cpp) and for the convolution epilogues that apply it as
// they store (ops::conv2d_batchnorm: conv_direct.h, winograd.h), so that both give the same bits.
// Callers must not compile this with floating-point contraction that could fuse the multiply and
// the add (x86-64's baseline has no FMA; files built for an FMA target use -ffp-contract=off).
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace ae::cpu {

// scale[j] = gamma[j] * invstd[j], invstd from the running variance in double, rounded once
// (BatchNormStats::running), or the saved invstd as it is (BatchNormStats::saved).
inline std::vector<float> batchnorm_scale(const ops::BatchNormApplyParams& p, const float* gamma,
                                          const float* var_or_invstd, int64_t c) {
  std::vector<float> scale(static_cast<std::size_t>(c));
  for (int64_t j = 0; j < c; ++j) {
    const float invstd = p.stats == ops::BatchNormStats::running
                             ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(var_or_invstd[j]) + p.eps))
                             : var_or_invstd[j];
    scale[static_cast<std::size_t>(j)] = gamma[j] * invstd;
  }
  return scale;
}

// One element: (x - mean) * scale + beta, + residual when given, then ReLU (NaN -> 0, -0 -> +0,
// like `v > 0 ? v : 0`).
inline float batchnorm_element(float x, float mean, float scale, float beta, const float* residual, bool relu) {
  float v = (x - mean) * scale + beta;
  if (residual) v = v + *residual;
  return relu ? (v > 0.0f ? v : 0.0f) : v;
}

}  // namespace ae::cpu

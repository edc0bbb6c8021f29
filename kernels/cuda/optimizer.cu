// SGD and Adam/AdamW steps, in place, with the CPU backend's formulas and order of operations
// (which follow torch.optim 1.13): scalar coefficients computed on the host in double and rounded
// to float, element work in float with the same explicit fused multiply-adds.
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

struct SgdCoefficients {
  float wd, momentum, keep, neg_lr;
  bool use_buffer, first, nesterov;
};

__global__ void sgd_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ buf, int64_t n,
                           SgdCoefficients c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    float d = g[i];
    if (c.wd != 0.0f) d = fmaf(c.wd, w[i], d);
    if (c.use_buffer) {
      const float b = c.first ? d : fmaf(c.keep, d, buf[i] * c.momentum);
      buf[i] = b;
      d = c.nesterov ? fmaf(c.momentum, b, d) : b;
    }
    w[i] = fmaf(c.neg_lr, d, w[i]);
  }
}

struct AdamCoefficients {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, wd;
  float neg_step_size, bias_correction2_sqrt, decoupled_decay;
  bool decoupled, coupled_decay;
};

__global__ void adam_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                            float* __restrict__ v, int64_t n, AdamCoefficients c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    float w_i = w[i];
    if (c.decoupled) w_i = w_i * c.decoupled_decay;
    float d = g[i];
    if (c.coupled_decay) d = fmaf(c.wd, w_i, d);
    const float m_i = fmaf(c.one_minus_beta1, d, m[i] * c.beta1);
    const float v_i = fmaf(c.one_minus_beta2 * d, d, v[i] * c.beta2);
    const float denom = sqrtf(v_i) / c.bias_correction2_sqrt + c.eps;
    m[i] = m_i;
    v[i] = v_i;
    w[i] = w_i + c.neg_step_size * m_i / denom;
  }
}

}  // namespace

void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) {
  const int64_t n = param.numel();
  SgdCoefficients c{};
  c.wd = p.weight_decay;
  c.momentum = p.momentum;
  c.keep = static_cast<float>(1.0 - static_cast<double>(p.dampening));
  c.neg_lr = -p.lr;
  c.use_buffer = p.momentum != 0.0f;
  c.first = step == 1;
  c.nesterov = p.nesterov;
  float* buf = c.use_buffer ? momentum_buf.f32() : nullptr;
  AE_LAUNCH(sgd_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, param.f32(), grad.f32(), buf, n, c);
}

void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) {
  const int64_t n = param.numel();
  const double t = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(p.beta1), t);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(p.beta2), t);
  AdamCoefficients c{};
  c.beta1 = p.beta1;
  c.beta2 = p.beta2;
  c.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(p.beta1));
  c.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(p.beta2));
  c.eps = p.eps;
  c.wd = p.weight_decay;
  c.neg_step_size = static_cast<float>(-(static_cast<double>(p.lr) / bias_correction1));
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  c.decoupled_decay = static_cast<float>(1.0 - static_cast<double>(p.lr) * static_cast<double>(p.weight_decay));
  c.decoupled = p.decoupled;
  c.coupled_decay = !p.decoupled && p.weight_decay != 0.0f;
  AE_LAUNCH(adam_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, param.f32(), grad.f32(), m.f32(),
            v.f32(), n, c);
}

}  // namespace ae::cuda

// CPU optimiser steps, computed exactly the way torch.optim (single-tensor path, PyTorch 1.13)
// does: scalar coefficients in double from the float hyper-parameters (Python floats are
// doubles), each rounded to float where ATen takes it as an operand, and the element-wise
// work in float, in PyTorch's order of operations. ATen's `add(x, alpha=a)` and `addcmul`
// run as fused multiply-adds on x86 (AVX2 kernels), so those are std::fma here; with that the
// results are bitwise equal to PyTorch's (checked on 4099 elements x 5 steps of Adam, Adam
// with L2 decay and AdamW, and in tests/unit/test_optimizer.cpp). Arguments arrive validated
// by kernels/optimizer.cpp.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {

void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) {
  const int64_t n = param.numel();
  float* w = param.f32();
  const float* g = grad.f32();
  float* buf = p.momentum != 0 ? momentum_buf.f32() : nullptr;
  const float wd = p.weight_decay;
  const float momentum = p.momentum;
  const float keep = static_cast<float>(1.0 - static_cast<double>(p.dampening));  // alpha = 1 - dampening
  const float neg_lr = -p.lr;
  // PyTorch creates the momentum buffer as a copy of the first (decayed) gradient.
  const bool first = step == 1;

  const bool nesterov = p.nesterov;
  parallel_elements(n, [=](int64_t i) {
    float d = g[i];
    if (wd != 0) d = std::fma(wd, w[i], d);  // d_p = d_p.add(param, alpha=wd)
    if (buf) {
      // buf.mul_(momentum).add_(d_p, alpha=1-dampening)
      const float b = first ? d : std::fma(keep, d, buf[i] * momentum);
      buf[i] = b;
      d = nesterov ? std::fma(momentum, b, d) : b;  // d_p.add(buf, alpha=momentum) or buf
    }
    w[i] = std::fma(neg_lr, d, w[i]);  // param.add_(d_p, alpha=-lr)
  });
}

void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) {
  const int64_t n = param.numel();
  float* w = param.f32();
  const float* g = grad.f32();
  float* mp = m.f32();
  float* vp = v.f32();

  // The Python-side scalars of torch.optim.Adam(W), in double.
  const double t = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(p.beta1), t);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(p.beta2), t);
  const double step_size = static_cast<double>(p.lr) / bias_correction1;
  // ...rounded to float where they meet a float tensor.
  const float neg_step_size = static_cast<float>(-step_size);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(p.beta1));
  const float one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(p.beta2));
  const float decoupled_decay =
      static_cast<float>(1.0 - static_cast<double>(p.lr) * static_cast<double>(p.weight_decay));
  const float beta1 = p.beta1, beta2 = p.beta2, eps = p.eps, wd = p.weight_decay;
  const bool coupled_decay = !p.decoupled && wd != 0;
  const bool decoupled = p.decoupled;

  // A square root and a division per element: worth threads sooner than a plain copy.
  constexpr int64_t kCost = 4;
  parallel_elements(
      n,
      [=](int64_t i) {
        float w_i = w[i];
        if (decoupled) w_i = w_i * decoupled_decay;  // AdamW: param.mul_(1 - lr*wd)
        float d = g[i];
        if (coupled_decay) d = std::fma(wd, w_i, d);                    // Adam: grad = grad.add(param, alpha=wd)
        const float m_i = std::fma(one_minus_beta1, d, mp[i] * beta1);  // exp_avg.mul_(b1).add_(g, alpha=1-b1)
        const float v_i =
            std::fma(one_minus_beta2 * d, d, vp[i] * beta2);  // exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
        const float denom = std::sqrt(v_i) / bias_correction2_sqrt + eps;  // (v.sqrt() / bc2_sqrt).add_(eps)
        mp[i] = m_i;
        vp[i] = v_i;
        w[i] = w_i + neg_step_size * m_i / denom;  // param.addcdiv_(m, denom, value=-step_size)
      },
      kCost);
}

// The multi-tensor ops run the single-tensor step on each entry: the same element code, so the
// results are bitwise those of per-tensor calls (each tensor still gets its own threads).
void sgd_step_multi(const SgdParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                    const std::vector<Tensor*>& momentum_bufs, int64_t step) {
  for (std::size_t i = 0; i < params.size(); ++i) cpu::sgd_step(p, *params[i], *grads[i], *momentum_bufs[i], step);
}

void adam_step_multi(const AdamParams& p, const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                     const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, int64_t step) {
  for (std::size_t i = 0; i < params.size(); ++i) cpu::adam_step(p, *params[i], *grads[i], *m[i], *v[i], step);
}

}  // namespace ae::cpu

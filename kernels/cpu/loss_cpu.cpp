// CPU mean-squared-error loss. Arguments arrive validated by kernels/loss.cpp.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {

Tensor mse_loss_forward(const Tensor& pred, const Tensor& target) {
  const int64_t n = pred.numel();
  const float* a = pred.f32();
  const float* b = target.f32();
  // Accumulate in double, serially: the loss must not drift with N, and a fixed summation
  // order keeps it bitwise repeatable (a threaded reduction may combine partial sums in any order).
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    sum += d * d;
  }
  Tensor loss = Tensor::empty({1});
  loss.f32()[0] = static_cast<float>(sum / static_cast<double>(n));
  return loss;
}

Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss) {
  const int64_t n = pred.numel();
  const float* a = pred.f32();
  const float* b = target.f32();
  Tensor grad = Tensor::empty(pred.shape());
  float* g = grad.f32();
  // d/dpred mean((pred-target)^2) = 2 (pred - target) / N, times the upstream scalar.
  const float scale = static_cast<float>(2.0 / static_cast<double>(n) * dloss);
  parallel_elements(n, [=](int64_t i) { g[i] = scale * (a[i] - b[i]); });
  return grad;
}

}  // namespace ae::cpu

// Mean-squared-error loss. The forward pass is a deterministic two-stage reduction: a fixed number
// of blocks (a function of n only) each sum a fixed slice in double, then one block sums those
// partials in a fixed tree, so the loss is bitwise repeatable from run to run.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxPartials = 512;

__global__ void squared_error_partials_kernel(const float* __restrict__ pred, const float* __restrict__ target,
                                              double* __restrict__ partials, int64_t n) {
  double acc = 0.0;
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const double d = static_cast<double>(pred[i]) - static_cast<double>(target[i]);
    acc += d * d;
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void mean_of_partials_kernel(const double* __restrict__ partials, int count, double n,
                                        float* __restrict__ loss) {
  double acc = 0.0;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) acc += partials[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) loss[0] = static_cast<float>(total / n);
}

__global__ void mse_backward_kernel(const float* __restrict__ pred, const float* __restrict__ target,
                                    float* __restrict__ grad, int64_t n, float scale) {
  for (int64_t i = first_index(); i < n; i += index_stride()) grad[i] = scale * (pred[i] - target[i]);
}

}  // namespace

Tensor mse_loss_forward(const Tensor& pred, const Tensor& target) {
  const int64_t n = pred.numel();
  const unsigned blocks = blocks_for(n, kThreads, kMaxPartials);
  // Partial sums are doubles; Tensor has no f64, so they live in a byte buffer (256-aligned).
  Tensor partials = Tensor::empty({static_cast<int64_t>(blocks) * 8}, DType::u8, pred.device());
  double* partial_ptr = reinterpret_cast<double*>(partials.data<uint8_t>());
  Tensor loss = Tensor::empty({1}, DType::f32, pred.device());
  AE_LAUNCH(squared_error_partials_kernel, dim3(blocks), dim3(kThreads), 0, nullptr, pred.f32(), target.f32(),
            partial_ptr, n);
  AE_LAUNCH(mean_of_partials_kernel, dim3(1), dim3(kThreads), 0, nullptr, static_cast<const double*>(partial_ptr),
            static_cast<int>(blocks), static_cast<double>(n), loss.f32());
  return loss;
}

Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss) {
  const int64_t n = pred.numel();
  Tensor grad = Tensor::empty(pred.shape(), DType::f32, pred.device());
  const float scale = static_cast<float>(2.0 / static_cast<double>(n) * dloss);  // as the CPU backend
  AE_LAUNCH(mse_backward_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr, pred.f32(),
            target.f32(), grad.f32(), n, scale);
  return grad;
}

}  // namespace ae::cuda

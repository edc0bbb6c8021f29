// Validation and dispatch for the loss ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {

Tensor mse_loss_forward(const Tensor& pred, const Tensor& target) {
  const Backend& be = backend_for("mse_loss_forward", {&pred, &target});
  return be.mse_loss_forward(pred, target);
}

Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss) {
  const Backend& be = backend_for("mse_loss_backward", {&pred, &target});
  return be.mse_loss_backward(pred, target, dloss);
}

}  // namespace ae::ops

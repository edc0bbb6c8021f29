// Validation and dispatch for the loss ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {
namespace {

// pred and target: f32, identical shapes (no broadcasting), at least one element (the mean
// of nothing is undefined).
void check_pred_target(const char* op, const Tensor& pred, const Tensor& target) {
  check_f32(op, "pred", pred);
  check_f32(op, "target", target);
  check_shape(op, "target", target, pred.shape());
  AE_CHECK(pred.numel() >= 1, op << ": pred " << pred.desc() << " is empty; the mean needs at least one element");
}

}  // namespace

Tensor mse_loss_forward(const Tensor& pred, const Tensor& target) {
  const char* op = "mse_loss_forward";
  check_pred_target(op, pred, target);
  const Backend& be = backend_for(op, {&pred, &target});
  return be.mse_loss_forward(pred, target);
}

Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float dloss) {
  const char* op = "mse_loss_backward";
  check_pred_target(op, pred, target);
  const Backend& be = backend_for(op, {&pred, &target});
  return be.mse_loss_backward(pred, target, dloss);
}

}  // namespace ae::ops

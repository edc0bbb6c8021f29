// Validation and dispatch for the optimizer ops of kernels/ops.h.
// Hyper-parameter checks follow torch.optim's constructors (written so that NaN fails them).
#include "kernels/backend.h"

namespace ae::ops {
namespace {

// A state or gradient tensor must be f32 and exactly the parameter's shape.
void check_like_param(const char* op, const char* arg, const Tensor& t, const Tensor& param) {
  check_f32(op, arg, t);
  check_shape(op, arg, t, param.shape());
}

void check_step(const char* op, int64_t step) {
  AE_CHECK(step >= 1, op << ": step " << step << " must be at least 1 (the first step is 1)");
}

}  // namespace

void sgd_step(const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf, int64_t step) {
  const char* op = "sgd_step";
  check_f32(op, "param", param);
  check_like_param(op, "grad", grad, param);
  AE_CHECK(p.lr >= 0, op << ": lr " << p.lr << " must be >= 0");
  AE_CHECK(p.momentum >= 0, op << ": momentum " << p.momentum << " must be >= 0");
  AE_CHECK(p.weight_decay >= 0, op << ": weight_decay " << p.weight_decay << " must be >= 0");
  AE_CHECK(!p.nesterov || (p.momentum > 0 && p.dampening == 0),
           op << ": nesterov needs momentum > 0 and dampening = 0 (got momentum " << p.momentum << ", dampening "
              << p.dampening << ")");
  // Without momentum the buffer is unused and may be left undefined.
  if (p.momentum != 0 || momentum_buf.defined()) check_like_param(op, "momentum_buf", momentum_buf, param);
  check_step(op, step);
  const Backend& be = backend_for(op, {&param, &grad, &momentum_buf});
  return be.sgd_step(p, param, grad, momentum_buf, step);
}

void adam_step(const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, int64_t step) {
  const char* op = p.decoupled ? "adamw_step" : "adam_step";
  check_f32(op, "param", param);
  check_like_param(op, "grad", grad, param);
  check_like_param(op, "m", m, param);
  check_like_param(op, "v", v, param);
  AE_CHECK(p.lr >= 0, op << ": lr " << p.lr << " must be >= 0");
  AE_CHECK(p.eps >= 0, op << ": eps " << p.eps << " must be >= 0");
  AE_CHECK(p.beta1 >= 0 && p.beta1 < 1, op << ": beta1 " << p.beta1 << " must be in [0, 1)");
  AE_CHECK(p.beta2 >= 0 && p.beta2 < 1, op << ": beta2 " << p.beta2 << " must be in [0, 1)");
  AE_CHECK(p.weight_decay >= 0, op << ": weight_decay " << p.weight_decay << " must be >= 0");
  check_step(op, step);
  const Backend& be = backend_for(op, {&param, &grad, &m, &v});
  return be.adam_step(p, param, grad, m, v, step);
}

}  // namespace ae::ops

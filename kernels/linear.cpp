// Validation and dispatch for the linear ops of kernels/ops.h.
#include "kernels/backend.h"

namespace ae::ops {
namespace {

// x [N,in] and w [out,in], both f32, agreeing on `in`; out and in at least 1.
void check_x_and_w(const char* op, const Tensor& x, const Tensor& w) {
  check_f32(op, "x", x);
  check_f32(op, "w", w);
  check_ndim(op, "x", x, 2);
  check_ndim(op, "w", w, 2);
  AE_CHECK(w.dim(0) >= 1 && w.dim(1) >= 1, op << ": w " << w.desc() << " must be [out,in] with out, in >= 1");
  AE_CHECK(x.dim(1) == w.dim(1), op << ": x " << x.desc() << " has " << x.dim(1) << " features but w " << w.desc()
                                    << " expects " << w.dim(1) << " (w is [out,in])");
}

}  // namespace

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear_forward";
  check_x_and_w(op, x, w);
  if (bias.defined()) {
    check_f32(op, "bias", bias);
    check_shape(op, "bias", bias, {w.dim(0)});
  }
  const Backend& be = backend_for(op, {&x, &w, &bias});
  return be.linear_forward(x, w, bias);
}

LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx) {
  const char* op = "linear_backward";
  check_x_and_w(op, x, w);
  check_f32(op, "dy", dy);
  check_shape(op, "dy", dy, {x.dim(0), w.dim(0)});
  const Backend& be = backend_for(op, {&x, &w, &dy});
  return be.linear_backward(x, w, dy, has_bias, need_dx);
}

}  // namespace ae::ops

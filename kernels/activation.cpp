// Validation and dispatch for the activation ops of kernels/ops.h.
#include <cmath>

#include "kernels/backend.h"

namespace ae::ops {
namespace {

void check_same_shape(const char* op, const char* arg, const Tensor& t, const char* ref_arg, const Tensor& ref) {
  check_f32(op, arg, t);
  AE_CHECK(t.shape() == ref.shape(), op << ": " << arg << " has shape " << shape_str(t.shape()) << " but " << ref_arg
                                        << " has shape " << shape_str(ref.shape()) << "; they must agree");
}

// slope is f32 [1] (one shared slope) or [C] (one per channel, C = last dim of x).
void check_slope(const char* op, const Tensor& x, const Tensor& slope) {
  check_f32(op, "x", x);
  AE_CHECK(x.ndim() >= 1, op << ": x " << x.desc() << " must have at least 1 dimension");
  check_f32(op, "slope", slope);
  const int64_t c = x.dim(-1);
  AE_CHECK(slope.shape() == Shape{1} || slope.shape() == Shape{c},
           op << ": slope has shape " << shape_str(slope.shape()) << ", expected [1] (shared) or [" << c
              << "] (per channel, C = last dim of x " << shape_str(x.shape()) << ")");
}

void check_dropout_p(const char* op, const DropoutParams& p) {
  AE_CHECK(std::isfinite(p.p) && p.p >= 0.0f && p.p < 1.0f,
           op << ": drop probability p = " << p.p << " must be in [0, 1)");
}

}  // namespace

Tensor relu_forward(const Tensor& x) {
  const char* op = "relu_forward";
  check_f32(op, "x", x);
  const Backend& be = backend_for(op, {&x});
  return be.relu_forward(x);
}

Tensor relu_backward(const Tensor& y, const Tensor& dy) {
  const char* op = "relu_backward";
  check_f32_or_bf16(op, "y", y);
  check_same_shape(op, "dy", dy, "y", y);
  const Backend& be = backend_for(op, {&y, &dy});
  return be.relu_backward(y, dy);
}

Tensor prelu_forward(const Tensor& x, const Tensor& slope) {
  const char* op = "prelu_forward";
  check_slope(op, x, slope);
  const Backend& be = backend_for(op, {&x, &slope});
  return be.prelu_forward(x, slope);
}

PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy) {
  const char* op = "prelu_backward";
  check_slope(op, x, slope);
  check_same_shape(op, "dy", dy, "x", x);
  const Backend& be = backend_for(op, {&x, &slope, &dy});
  return be.prelu_backward(x, slope, dy);
}

DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x) {
  const char* op = "dropout_forward";
  check_dropout_p(op, p);
  check_f32(op, "x", x);
  if (p.device_offset.defined()) {
    AE_CHECK(p.device_offset.dtype() == DType::i64 && p.device_offset.shape() == Shape{1},
             op << ": device_offset " << p.device_offset.desc() << " must be i64 [1]");
    const Backend& be = backend_for(op, {&x, &p.device_offset});
    return be.dropout_forward(p, x);
  }
  const Backend& be = backend_for(op, {&x});
  return be.dropout_forward(p, x);
}

Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy) {
  const char* op = "dropout_backward";
  check_dropout_p(op, p);
  check_f32(op, "dy", dy);
  AE_CHECK(mask.defined(), op << ": mask is undefined");
  AE_CHECK(mask.dtype() == DType::u8, op << ": mask " << mask.desc() << " must be u8 (dropout_forward's mask)");
  AE_CHECK(mask.shape() == dy.shape(), op << ": mask has shape " << shape_str(mask.shape()) << " but dy has shape "
                                          << shape_str(dy.shape()) << "; they must agree");
  const Backend& be = backend_for(op, {&mask, &dy});
  return be.dropout_backward(p, mask, dy);
}

}  // namespace ae::ops

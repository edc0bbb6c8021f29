// Validation and dispatch for the pool ops of kernels/ops.h.
// Every check runs here, once, before any backend sees the arguments, so the CPU and CUDA
// kernels can assume well-formed NHWC tensors and parameters.
#include "kernels/backend.h"

namespace ae::ops {
namespace {

// PyTorch's constraints on max pooling: positive kernel and stride, 0 <= pad <= kernel/2.
// The pad limit also guarantees that every output window overlaps the image: the last window
// starts at oh*stride - pad <= H + pad - kernel <= H - 1 (pad <= kernel - 1), and every window
// ends at or after kernel - pad >= 1 > 0. So no output is ever computed from padding alone.
void check_maxpool_params(const char* op, const MaxPool2dParams& p) {
  AE_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1,
           op << ": kernel " << p.kernel_h << "x" << p.kernel_w << " must be at least 1x1");
  AE_CHECK(p.stride_h >= 1 && p.stride_w >= 1,
           op << ": stride " << p.stride_h << "x" << p.stride_w << " must be at least 1x1");
  AE_CHECK(p.pad_h >= 0 && p.pad_w >= 0, op << ": padding " << p.pad_h << "x" << p.pad_w << " must not be negative");
  AE_CHECK(p.pad_h <= p.kernel_h / 2 && p.pad_w <= p.kernel_w / 2,
           op << ": padding " << p.pad_h << "x" << p.pad_w << " must be at most half the kernel " << p.kernel_h
              << "x" << p.kernel_w << " (PyTorch's rule; larger padding would make windows of padding only)");
}

// Output size of max pooling for an NHWC shape; both sides must be at least 1.
void check_maxpool_output(const char* op, const MaxPool2dParams& p, const Shape& x_shape) {
  AE_CHECK(x_shape[1] + 2 * p.pad_h >= p.kernel_h && x_shape[2] + 2 * p.pad_w >= p.kernel_w,
           op << ": input " << shape_str(x_shape) << " with padding " << p.pad_h << "x" << p.pad_w
              << " is smaller than the kernel " << p.kernel_h << "x" << p.kernel_w);
}

void check_nhwc_shape(const char* op, const char* arg, const Shape& s) {
  AE_CHECK(s.size() == 4, op << ": " << arg << " " << shape_str(s) << " must be NHWC (4 dimensions)");
  for (int64_t d : s) AE_CHECK(d >= 0, op << ": " << arg << " " << shape_str(s) << " has a negative dimension");
}

void check_adaptive_params(const char* op, const AdaptiveAvgPool2dParams& p, const Shape& x_shape) {
  AE_CHECK(p.out_h >= 1 && p.out_w >= 1, op << ": output size " << p.out_h << "x" << p.out_w << " must be at least 1x1");
  AE_CHECK(x_shape[1] >= 1 && x_shape[2] >= 1,
           op << ": input " << shape_str(x_shape) << " has an empty image plane (H and W must be at least 1)");
}

}  // namespace

MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x) {
  const char* op = "maxpool2d_forward";
  check_f32_or_bf16(op, "x", x);
  check_ndim(op, "x", x, 4);
  check_maxpool_params(op, p);
  check_maxpool_output(op, p, x.shape());
  const Backend& be = backend_for(op, {&x});
  return be.maxpool2d_forward(p, x);
}

Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape) {
  const char* op = "maxpool2d_backward";
  check_f32(op, "dy", dy);
  check_nhwc_shape(op, "x_shape", x_shape);
  check_maxpool_params(op, p);
  check_maxpool_output(op, p, x_shape);
  const Shape y_shape{x_shape[0], p.out_h(x_shape[1]), p.out_w(x_shape[2]), x_shape[3]};
  check_shape(op, "dy", dy, y_shape);
  check_shape(op, "argmax", argmax, y_shape);
  AE_CHECK(argmax.dtype() == DType::i64, op << ": argmax " << argmax.desc() << " must be i64");
  const Backend& be = backend_for(op, {&dy, &argmax});
  return be.maxpool2d_backward(p, dy, argmax, x_shape);
}

Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x) {
  const char* op = "adaptive_avgpool2d_forward";
  check_f32_or_bf16(op, "x", x);
  check_ndim(op, "x", x, 4);
  check_adaptive_params(op, p, x.shape());
  const Backend& be = backend_for(op, {&x});
  return be.adaptive_avgpool2d_forward(p, x);
}

Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape) {
  const char* op = "adaptive_avgpool2d_backward";
  check_f32(op, "dy", dy);
  check_nhwc_shape(op, "x_shape", x_shape);
  check_adaptive_params(op, p, x_shape);
  check_shape(op, "dy", dy, {x_shape[0], p.out_h, p.out_w, x_shape[3]});
  const Backend& be = backend_for(op, {&dy});
  return be.adaptive_avgpool2d_backward(p, dy, x_shape);
}

}  // namespace ae::ops

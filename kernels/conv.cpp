// Validation and dispatch for the conv ops of kernels/ops.h. Every argument is checked here, once,
// so backends receive consistent shapes; errors name the op, the argument, the shapes and the device.
#include <sstream>
#include <string>

#include "kernels/backend.h"
#include "kernels/op_checks.h"

namespace ae::ops {
namespace {

std::string params_str(const Conv2dParams& p) {
  std::ostringstream os;
  os << "kernel " << p.kernel_h << "x" << p.kernel_w << ", stride " << p.stride_h << "x" << p.stride_w << ", pad "
     << p.pad_h << "x" << p.pad_w;
  return os.str();
}

void check_params(const char* op, const Conv2dParams& p) {
  AE_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
           op << ": invalid parameters (" << params_str(p) << "): kernel and stride must be >= 1, padding >= 0");
}

void check_shape_arg(const char* op, const char* arg, const Shape& s) {
  AE_CHECK(s.size() == 4, op << ": " << arg << " " << shape_str(s) << " must have 4 dimensions");
  for (int64_t d : s) AE_CHECK(d >= 1, op << ": " << arg << " " << shape_str(s) << " has an empty dimension");
}

void check_tensor_arg(const char* op, const char* arg, const Tensor& t, bool bf16_allowed = false) {
  check_ndim(op, arg, t, 4);
  bf16_allowed ? check_f32_or_bf16(op, arg, t) : check_f32(op, arg, t);
  for (int64_t d : t.shape()) AE_CHECK(d >= 1, op << ": " << arg << " " << t.desc() << " has an empty dimension");
}

// The input [N,H,W,C] and weight [O,KH,KW,C] shapes agree with each other and with p; returns the
// output shape [N,OH,OW,O]. x_arg/w_arg name the arguments they came from; `device` decorates.
// The forwards' x and w: 4-d, non-empty, f32, or both bf16 (storage: conv2d_forward in ops.h).
void check_forward_operands(const char* op, const Tensor& x, const Tensor& w) {
  check_tensor_arg(op, "x", x, /*bf16_allowed=*/true);
  check_tensor_arg(op, "w", w, /*bf16_allowed=*/true);
  AE_CHECK(x.dtype() == w.dtype(), op << ": x " << x.desc() << " and w " << w.desc()
                                      << " must have one dtype (f32, or bf16 for both: ops::cast the other)");
}

Shape check_x_w(const char* op, const Conv2dParams& p, const char* x_arg, const Shape& x, const char* w_arg,
                const Shape& w, const std::string& device) {
  const std::string where = " (" + params_str(p) + ", device " + device + ")";
  AE_CHECK(x[3] == w[3], op << ": " << x_arg << " " << shape_str(x) << " has " << x[3] << " channels but " << w_arg
                            << " " << shape_str(w) << " [O,KH,KW,C] expects " << w[3] << where);
  AE_CHECK(w[1] == p.kernel_h && w[2] == p.kernel_w,
           op << ": " << w_arg << " " << shape_str(w) << " [O,KH,KW,C] does not match the kernel size" << where);
  // Checked before out_h/out_w: their integer division truncates toward zero, which would turn
  // a slightly negative numerator into an output size of 1.
  AE_CHECK(x[1] + 2 * p.pad_h >= p.kernel_h && x[2] + 2 * p.pad_w >= p.kernel_w,
           op << ": output size < 1: the kernel is larger than the padded input " << x_arg << " " << shape_str(x)
              << where);
  return {x[0], p.out_h(x[1]), p.out_w(x[2]), w[0]};
}

void check_dy(const char* op, const Tensor& dy, const Shape& expected, const std::string& device) {
  AE_CHECK(dy.shape() == expected, op << ": dy " << dy.desc() << " does not match the output shape "
                                      << shape_str(expected) << " of this convolution (device " << device << ")");
}

}  // namespace

Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w) {
  constexpr const char* op = "conv2d_forward";
  check_params(op, p);
  check_forward_operands(op, x, w);
  const Backend& be = backend_for(op, {&x, &w});
  check_x_w(op, p, "x", x.shape(), "w", w.shape(), x.device().str());
  return be.conv2d_forward(p, x, w);
}

Tensor conv2d_batchnorm(const Conv2dParams& conv, const BatchNormApplyParams& bn, const Tensor& x, const Tensor& w,
                        const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd,
                        const Tensor& residual) {
  constexpr const char* op = "conv2d_batchnorm";
  check_params(op, conv);
  check_forward_operands(op, x, w);
  const Backend& be = backend_for(op, {&x, &w, &gamma, &beta, &mean, &var_or_invstd, &residual});
  const Shape y_shape = check_x_w(op, conv, "x", x.shape(), "w", w.shape(), x.device().str());
  check_batchnorm_apply_args(op, bn, y_shape, gamma, beta, mean, var_or_invstd, residual);
  return be.conv2d_batchnorm(conv, bn, x, w, gamma, beta, mean, var_or_invstd, residual);
}

ConvBatchNormTrainOut conv2d_batchnorm_train(const Conv2dParams& conv, const BatchNormParams& bn, bool relu,
                                             const Tensor& x, const Tensor& w, const Tensor& gamma,
                                             const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                                             const Tensor& residual, DType y_dtype) {
  constexpr const char* op = "conv2d_batchnorm_train";
  check_params(op, conv);
  check_forward_operands(op, x, w);
  AE_CHECK(y_dtype == DType::f32 || y_dtype == DType::bf16,
           op << ": y_dtype " << dtype_name(y_dtype) << ": y can be f32 or bf16");
  const Backend& be = backend_for(op, {&x, &w, &gamma, &beta, &running_mean, &running_var, &residual});
  const Shape y_shape = check_x_w(op, conv, "x", x.shape(), "w", w.shape(), x.device().str());
  check_batchnorm_train_args(op, bn, y_shape, gamma, beta, running_mean, running_var);
  if (residual.defined()) {
    check_f32_or_bf16(op, "residual", residual);
    AE_CHECK(residual.shape() == y_shape, op << ": residual has shape " << shape_str(residual.shape())
                                             << ", expected the convolution's output shape " << shape_str(y_shape));
  }
  return be.conv2d_batchnorm_train(conv, bn, relu, x, w, gamma, beta, running_mean, running_var, residual, y_dtype);
}

Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape) {
  constexpr const char* op = "conv2d_backward_data";
  check_params(op, p);
  check_tensor_arg(op, "dy", dy);
  check_tensor_arg(op, "w", w);
  check_shape_arg(op, "x_shape", x_shape);
  const Backend& be = backend_for(op, {&dy, &w});
  const std::string device = dy.device().str();
  check_dy(op, dy, check_x_w(op, p, "x_shape", x_shape, "w", w.shape(), device), device);
  return be.conv2d_backward_data(p, dy, w, x_shape);
}

Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape) {
  constexpr const char* op = "conv2d_backward_weight";
  check_params(op, p);
  check_tensor_arg(op, "x", x, /*bf16_allowed=*/true);
  check_tensor_arg(op, "dy", dy);
  check_shape_arg(op, "w_shape", w_shape);
  const Backend& be = backend_for(op, {&x, &dy});
  const std::string device = x.device().str();
  check_dy(op, dy, check_x_w(op, p, "x", x.shape(), "w_shape", w_shape, device), device);
  // A bf16 x (a stored activation) is widened here, for both backends: exact, and in bf16 conv math
  // the same operands the kernel would have rounded it to. Reading it as bf16 in the kernel itself
  // (half its bytes) is not done yet.
  return be.conv2d_backward_weight(p, cast(x, DType::f32), dy, w_shape);
}

Tensor conv_fold_centre_tap(const Tensor& w, const Tensor& a) {
  constexpr const char* op = "conv_fold_centre_tap";
  check_f32(op, "w", w);
  check_f32(op, "a", a);
  check_ndim(op, "w", w, 4);
  AE_CHECK(w.dim(1) == 3 && w.dim(2) == 3, op << ": w " << w.desc() << " is not a 3x3 kernel [O,3,3,C]");
  check_shape(op, "a", a, {w.dim(0), 1, 1, w.dim(3)});
  const Backend& be = backend_for(op, {&w, &a});
  return be.conv_fold_centre_tap(w, a);
}

}  // namespace ae::ops

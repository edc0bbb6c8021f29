// Validation and dispatch for the elementwise ops of kernels/ops.h.
// There is no broadcasting: operands are f32 of one shape (cast: f32 or bf16).
#include "kernels/backend.h"

namespace ae::ops {
namespace {

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  check_f32(op, "a", a);
  check_f32(op, "b", b);
  AE_CHECK(a.shape() == b.shape(), op << ": a has shape " << shape_str(a.shape()) << " but b has shape "
                                      << shape_str(b.shape()) << "; they must agree (no broadcasting)");
}

// In-place a += s*b is safe when b is a itself (each element touches only its own index), but
// not when b is a different window of a's storage: the result would depend on thread order.
void check_no_partial_overlap(const char* op, const Tensor& a, const Tensor& b) {
  if (a.storage() != b.storage() || a.offset() == b.offset()) return;
  const int64_t a_end = a.offset() + a.numel(), b_end = b.offset() + b.numel();
  AE_CHECK(a_end <= b.offset() || b_end <= a.offset(),
           op << ": b is a shifted view overlapping a (offsets " << a.offset() << " and " << b.offset() << ", "
              << a.numel() << " elements); in-place update would depend on evaluation order");
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_same_shape("add", a, b);
  const Backend& be = backend_for("add", {&a, &b});
  return be.add(a, b);
}

Tensor scale(const Tensor& a, float s) {
  check_f32("scale", "a", a);
  const Backend& be = backend_for("scale", {&a});
  return be.scale(a, s);
}

void add_inplace(Tensor& a, const Tensor& b, float s) {
  check_same_shape("add_inplace", a, b);
  check_no_partial_overlap("add_inplace", a, b);
  const Backend& be = backend_for("add_inplace", {&a, &b});
  return be.add_inplace(a, b, s);
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  check_same_shape("add_relu", a, b);
  const Backend& be = backend_for("add_relu", {&a, &b});
  return be.add_relu(a, b);
}

Tensor cast(const Tensor& x, DType to) {
  AE_CHECK(x.defined(), "cast: x is undefined");
  const auto castable = [](DType t) { return t == DType::f32 || t == DType::bf16; };
  AE_CHECK(castable(x.dtype()) && castable(to), "cast: " << x.desc() << " to " << dtype_name(to)
                                                          << ": only f32 <-> bf16 conversions exist");
  if (x.dtype() == to) return x;
  const Backend& be = backend_for("cast", {&x});
  return be.cast(x, to);
}

}  // namespace ae::ops

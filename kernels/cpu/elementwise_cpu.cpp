// CPU elementwise ops on same-shape f32 tensors, and the f32 <-> bf16 cast (validated by
// kernels/elementwise.cpp). Each element is computed independently, so threading never changes the
// bits.

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {
namespace {

template <typename F>
Tensor map2(const Tensor& a, const Tensor& b, F&& f) {
  Tensor out = Tensor::empty(a.shape());
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* op = out.f32();
  const int64_t n = a.numel();
  parallel_elements(n, [=, &f](int64_t i) { op[i] = f(ap[i], bp[i]); });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return map2(a, b, [](float u, float v) { return u + v; });
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  return map2(a, b, [](float u, float v) {
    const float s = u + v;
    return s > 0.0f ? s : 0.0f;
  });
}

Tensor scale(const Tensor& a, float s) {
  Tensor out = Tensor::empty(a.shape());
  const float* ap = a.f32();
  float* op = out.f32();
  const int64_t n = a.numel();
  parallel_elements(n, [=](int64_t i) { op[i] = s * ap[i]; });
  return out;
}

void add_inplace(Tensor& a, const Tensor& b, float s) {
  float* ap = a.f32();
  const float* bp = b.f32();
  const int64_t n = a.numel();
  // b may be a itself (a += s*a): each element reads and writes only index i, so that is safe.
  parallel_elements(n, [=](int64_t i) { ap[i] += s * bp[i]; });
}

Tensor cast(const Tensor& x, DType to) {
  Tensor out = Tensor::empty(x.shape(), to);
  const int64_t n = x.numel();
  if (to == DType::bf16) {
    const float* xp = x.f32();
    BFloat16* op = out.data<BFloat16>();
    parallel_elements(n, [=](int64_t i) { op[i].bits = float_to_bf16(xp[i]); });
  } else {
    const BFloat16* xp = x.data<BFloat16>();
    float* op = out.f32();
    parallel_elements(n, [=](int64_t i) { op[i] = bf16_to_float(xp[i].bits); });
  }
  return out;
}

}  // namespace ae::cpu

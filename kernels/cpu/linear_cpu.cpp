// CPU fully connected layer on OpenBLAS sgemm (kernels/cpu/gemm.h). Row-major throughout: x [N,in], w [out,in]
// (PyTorch's layout), y [N,out]. Arguments arrive validated by kernels/linear.cpp.
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t n = x.dim(0), in = w.dim(1), out = w.dim(0);
  Tensor y = Tensor::empty({n, out});
  if (n == 0) return y;
  float* yp = y.f32();
  // Start from the bias in every row, then let sgemm accumulate x W^T on top (beta = 1).
  float beta = 0.0f;
  if (bias.defined()) {
    const float* bp = bias.f32();
    for (int64_t r = 0; r < n; ++r) std::copy(bp, bp + out, yp + r * out);
    beta = 1.0f;
  }
  sgemm("linear_forward", false, true, n, out, in, x.f32(), in, w.f32(), in, beta, yp, out);
  return y;
}

LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx) {
  const int64_t n = x.dim(0), in = w.dim(1), out = w.dim(0);
  LinearGrads g;
  g.dw = Tensor::zeros({out, in});
  if (has_bias) g.dbias = Tensor::zeros({out});
  if (need_dx) g.dx = Tensor::zeros({n, in});
  // An empty batch contributes nothing; sgemm with K = 0 is left out rather than trusted.
  if (n == 0) return g;

  const float* dyp = dy.f32();
  // dW [out,in] = dy^T [out,N] x [N,in]
  sgemm("linear_backward", true, false, out, in, n, dyp, out, x.f32(), in, 0.0f, g.dw.f32(), in);
  if (need_dx) {
    // dx [N,in] = dy [N,out] W [out,in]
    sgemm("linear_backward", false, false, n, in, out, dyp, out, w.f32(), in, 0.0f, g.dx.f32(), in);
  }
  if (has_bias) {
    // db = column sums of dy, accumulated in double so a large batch loses nothing.
    float* db = g.dbias.f32();
    parallel_rows(out, min_rows_for(n), [=](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        double s = 0;
        for (int64_t r = 0; r < n; ++r) s += dyp[r * out + o];
        db[o] = static_cast<float>(s);
      }
    });
  }
  return g;
}

}  // namespace ae::cpu

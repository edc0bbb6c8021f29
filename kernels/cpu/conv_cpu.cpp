// CPU convolution (groups = 1, dilation 1): NHWC im2col + OpenBLAS sgemm.
//
// With col the [rows, K = KH*KW*C] column matrix of a chunk of output lines (kernels/cpu/im2col.h)
// and the OHWI weight viewed as W [O, K]:
//   forward          y    [rows, O] = col * W^T
//   backward-data    dcol [rows, K] = dy * W,      then col2im scatters dcol back into dx
//   backward-weight  dW   [O, K]   += dy^T * col   (accumulated over chunks)
// A 1x1 stride-1 unpadded conv needs no column matrix: x itself is col, viewed as [N*H*W, C].
// The batch is processed in chunks of output lines (kernels/cpu/im2col.h: ConvChunking) so the
// column buffer stays bounded and cache-sized whatever the batch size.
//
// Threads: each GEMM is split into bands over the sleeping worker threads (kernels/cpu/gemm.h), and
// im2col and col2im split their rows over the same threads (runtime/thread_pool.h explains why not
// OpenMP).
//
// 3x3 stride-1 convolutions (most of ResNet-18's multiplications) take Winograd F(m x m, 3x3) for
// the forward and backward-data instead where kernels/cpu/winograd.h says it pays
// (AE_CPU_CONV=im2col forces the column path, for comparison); backward-weight is always im2col.
// Forwards with few output pixels (batch 1 from layer3 on) take the direct dot-product form of
// kernels/cpu/conv_direct.h instead, which writes no column matrix and packs no weights, and the
// stem, layer1 and small layer2 convolutions its broadcast form. conv2d_batchnorm (inference) hands
// the BatchNorm, residual and ReLU to the direct forms' store and to Winograd's output transform;
// after the other paths (im2col, pointwise GEMM) it runs batchnorm_apply over y in place.
#include <algorithm>
#include <optional>

#include "kernels/cpu/batchnorm_apply.h"
#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/winograd.h"

namespace ae::cpu {
namespace {

// Row-major C[m,n] = A[m,k] * op(B) + beta*C, op(B) = B^T when b_transposed (B stored [n,k]).
void gemm_a_b(const char* op, int64_t m, int64_t n, int64_t k, const float* a, const float* b, bool b_transposed,
              float beta, float* c) {
  sgemm(op, false, b_transposed, m, n, k, a, k, b, b_transposed ? k : n, beta, c, n);
}

// Row-major C[m,n] = A^T * B + beta*C with A stored [k,m] and B stored [k,n].
void gemm_at_b(const char* op, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float beta, float* c) {
  sgemm(op, true, false, m, n, k, a, m, b, n, beta, c, n);
}

// Calls body(l0, l1, col) for consecutive chunks of output lines covering the batch, col being a
// scratch buffer with room for that chunk's column matrix.
template <typename Body>
void for_each_chunk(const ConvGeometry& g, Body&& body) {
  const int64_t lines_per_chunk = conv_lines_per_chunk(g);
  float* col = conv_workspace(static_cast<std::size_t>(lines_per_chunk * g.ow * g.k()));
  for (int64_t l0 = 0; l0 < g.lines(); l0 += lines_per_chunk) {
    body(l0, std::min(l0 + lines_per_chunk, g.lines()), col);
  }
}

// Winograd for this geometry (the forward's; backward-data is the same convolution transposed)?
bool use_winograd(const ConvGeometry& g, bool backward_data) {
  const ConvAlgo algo = conv_algo();
  if (algo == ConvAlgo::im2col || algo == ConvAlgo::direct || !winograd_applicable(g)) return false;
  return algo == ConvAlgo::winograd || winograd_profitable(g, backward_data);
}

// The direct forward's form for this geometry on this machine, if it takes one: forced
// (ConvAlgo::direct), the dot form where it applies, else the broadcast form; automatic, the
// form that applies and pays.
std::optional<DirectForm> direct_form(const ConvGeometry& g) {
  const ConvAlgo algo = conv_algo();
  if (algo == ConvAlgo::im2col || algo == ConvAlgo::winograd) return std::nullopt;
  const CpuIsa isa = cpu_isa();
  for (DirectForm form : {DirectForm::dot, DirectForm::broadcast})
    if (conv_direct_applicable(g, isa, form) && (algo == ConvAlgo::direct || conv_direct_profitable(g, isa, form)))
      return form;
  return std::nullopt;
}

}  // namespace

Tensor conv2d_forward(const Conv2dParams& p, const Tensor& x, const Tensor& w) {
  constexpr const char* op = "conv2d_forward";
  // bf16 storage (both, checked by conv.cpp): the f32 paths on the exactly widened values. The CPU
  // has no bf16 arithmetic to gain from; it only has to accept what a CUDA caller may hand it.
  if (x.dtype() == DType::bf16) return cpu::conv2d_forward(p, cpu::cast(x, DType::f32), cpu::cast(w, DType::f32));
  const ConvGeometry g(p, x.shape(), w.dim(0));
  Tensor y = Tensor::empty({g.n, g.oh, g.ow, g.o});
  const float* xp = x.f32();
  const float* wp = w.f32();
  float* yp = y.f32();
  if (const std::optional<DirectForm> form = direct_form(g)) {
    conv_direct_forward(g, xp, wp, yp, cpu_isa(), *form);
    ++(*form == DirectForm::dot ? conv_path_counts().direct_dot : conv_path_counts().direct_broadcast);
    return y;
  }
  if (g.is_pointwise_identity()) {
    gemm_a_b(op, g.n * g.h * g.w, g.o, g.c, xp, wp, /*b_transposed=*/true, 0.0f, yp);
    ++conv_path_counts().pointwise;
    return y;
  }
  if (use_winograd(g, /*backward_data=*/false)) {
    winograd_forward(g, xp, wp, yp);
    return y;
  }
  ++conv_path_counts().im2col;
  for_each_chunk(g, [&](int64_t l0, int64_t l1, float* col) {
    im2col_lines(g, xp, l0, l1, col);
    gemm_a_b(op, (l1 - l0) * g.ow, g.o, g.k(), col, wp, /*b_transposed=*/true, 0.0f, yp + l0 * g.ow * g.o);
  });
  return y;
}

Tensor conv2d_batchnorm(const Conv2dParams& conv, const ops::BatchNormApplyParams& bn, const Tensor& x, const Tensor& w,
                        const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var_or_invstd,
                        const Tensor& residual) {
  // bf16 anywhere (conv.cpp checked it): the f32 op on the widened operands, y cast at the end.
  const auto bf16 = [](const Tensor& t) { return t.defined() && t.dtype() == DType::bf16; };
  if (bf16(x) || bf16(residual) || bn.out_dtype == DType::bf16) {
    const auto widen = [&](const Tensor& t) { return bf16(t) ? cpu::cast(t, DType::f32) : t; };
    ops::BatchNormApplyParams f32_bn = bn;
    f32_bn.out_dtype = DType::f32;
    const Tensor y =
        cpu::conv2d_batchnorm(conv, f32_bn, widen(x), widen(w), gamma, beta, mean, var_or_invstd, widen(residual));
    return bn.out_dtype == DType::bf16 ? cpu::cast(y, DType::bf16) : y;
  }
  const ConvGeometry g(conv, x.shape(), w.dim(0));
  // The paths of conv2d_forward, in its order: the direct forms and Winograd apply the epilogue as
  // they store (same bits as batchnorm_apply after them).
  const std::optional<DirectForm> form = direct_form(g);
  const bool winograd = !form && !g.is_pointwise_identity() && use_winograd(g, /*backward_data=*/false);
  if (form || winograd) {
    const std::vector<float> scale = batchnorm_scale(bn, gamma.f32(), var_or_invstd.f32(), g.o);
    ConvEpilogue ep;
    ep.mean = mean.f32();
    ep.scale = scale.data();
    ep.beta = beta.f32();
    ep.residual = residual.defined() ? residual.f32() : nullptr;
    ep.relu = bn.relu;
    Tensor y = Tensor::empty({g.n, g.oh, g.ow, g.o});
    if (form) {
      conv_direct_forward(g, x.f32(), w.f32(), y.f32(), cpu_isa(), *form, ep);
      ++(*form == DirectForm::dot ? conv_path_counts().direct_dot : conv_path_counts().direct_broadcast);
    } else {
      winograd_forward(g, x.f32(), w.f32(), y.f32(), ep);  // counts its own runs
    }
    ++conv_path_counts().fused_epilogue;
    return y;
  }
  ops::BatchNormApplyParams in_place = bn;
  in_place.in_place = true;  // y is this op's own buffer
  return cpu::batchnorm_apply(in_place, cpu::conv2d_forward(conv, x, w), gamma, beta, mean, var_or_invstd, residual);
}

Tensor conv2d_backward_data(const Conv2dParams& p, const Tensor& dy, const Tensor& w, const Shape& x_shape) {
  constexpr const char* op = "conv2d_backward_data";
  const ConvGeometry g(p, x_shape, w.dim(0));
  const float* dyp = dy.f32();
  const float* wp = w.f32();
  if (g.is_pointwise_identity()) {
    Tensor dx = Tensor::empty(x_shape);
    gemm_a_b(op, g.n * g.h * g.w, g.c, g.o, dyp, wp, /*b_transposed=*/false, 0.0f, dx.f32());
    ++conv_path_counts().pointwise;
    return dx;
  }
  if (use_winograd(g, /*backward_data=*/true)) {
    Tensor dx = Tensor::empty(x_shape);
    winograd_backward_data(g, dyp, wp, dx.f32());
    return dx;
  }
  ++conv_path_counts().im2col;
  // col2im zeroes dx rows as it first reaches them, chunk by chunk, and accumulates into them.
  Tensor dx = Tensor::empty(x_shape);
  float* dxp = dx.f32();
  int64_t fresh_from = 0;
  for_each_chunk(g, [&](int64_t l0, int64_t l1, float* dcol) {
    gemm_a_b(op, (l1 - l0) * g.ow, g.k(), g.o, dyp + l0 * g.ow * g.o, wp, /*b_transposed=*/false, 0.0f, dcol);
    fresh_from = col2im_lines(g, dcol, l0, l1, fresh_from, dxp);
  });
  zero_input_rows(g, dxp, fresh_from, g.n * g.h);  // rows below the last window, if any
  return dx;
}

Tensor conv2d_backward_weight(const Conv2dParams& p, const Tensor& x, const Tensor& dy, const Shape& w_shape) {
  constexpr const char* op = "conv2d_backward_weight";
  const ConvGeometry g(p, x.shape(), w_shape[0]);
  Tensor dw = Tensor::empty(w_shape);
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  float* dwp = dw.f32();
  if (g.is_pointwise_identity()) {
    gemm_at_b(op, g.o, g.c, g.n * g.h * g.w, dyp, xp, 0.0f, dwp);
    ++conv_path_counts().pointwise;
    return dw;
  }
  ++conv_path_counts().im2col;
  for_each_chunk(g, [&](int64_t l0, int64_t l1, float* col) {
    im2col_lines(g, xp, l0, l1, col);
    const float beta = l0 == 0 ? 0.0f : 1.0f;  // the first chunk initialises dW
    gemm_at_b(op, g.o, g.k(), (l1 - l0) * g.ow, dyp + l0 * g.ow * g.o, col, beta, dwp);
  });
  return dw;
}

Tensor conv_fold_centre_tap(const Tensor& w, const Tensor& a) {
  Tensor out = w.clone();
  const int64_t o_count = w.dim(0), c = w.dim(3);
  float* dst = out.f32();
  const float* src = a.f32();
  for (int64_t o = 0; o < o_count; ++o) {
    float* centre = dst + (o * 9 + 4) * c;  // [o, 1, 1, :]
    for (int64_t i = 0; i < c; ++i) centre[i] += src[o * c + i];
  }
  return out;
}

}  // namespace ae::cpu

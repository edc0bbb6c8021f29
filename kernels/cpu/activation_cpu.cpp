// CPU activations: ReLU, PReLU (one shared slope or one per channel = last dim) and inverted
// dropout driven by the counter-based Philox stream, so the mask is a pure function of
// (seed, offset + element index) and the CUDA kernel draws the same one.
// Arguments arrive validated by kernels/activation.cpp.
#include <vector>

#include "kernels/cpu/channel_reduce.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"
#include "runtime/philox.h"

namespace ae::cpu {
namespace {

// A shared slope [1] acts like C = 1: every element is its own "row".
int64_t slope_channels(const Tensor& x, const Tensor& slope) { return slope.numel() == 1 ? 1 : x.dim(-1); }

}  // namespace

Tensor relu_forward(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  const int64_t n = x.numel();
  parallel_elements(n, [=](int64_t i) { yp[i] = xp[i] > 0.0f ? xp[i] : 0.0f; });
  return y;
}

namespace {

template <typename Y>
void relu_backward_loop(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const Y* yp = y.data<Y>();
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
  // dy is loaded unconditionally: a conditional load would keep this a (mispredicted) branch
  // per element instead of a vectorised select.
  parallel_elements(y.numel(), [=](int64_t i) {
    const float g = dyp[i];
    dxp[i] = load_as_float(yp, i) > 0.0f ? g : 0.0f;
  });
}

}  // namespace

Tensor relu_backward(const Tensor& y, const Tensor& dy) {
  Tensor dx = Tensor::empty(y.shape());
  y.dtype() == DType::bf16 ? relu_backward_loop<BFloat16>(y, dy, dx) : relu_backward_loop<float>(y, dy, dx);
  return dx;
}

Tensor prelu_forward(const Tensor& x, const Tensor& slope) {
  const int64_t c = slope_channels(x, slope);
  const int64_t rows = c > 0 ? x.numel() / c : 0;
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.f32();
  const float* a = slope.f32();
  float* yp = y.f32();
  parallel_rows(rows, min_rows_for(c), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < c; ++j) {
        const float v = xp[r * c + j];
        yp[r * c + j] = v > 0.0f ? v : a[j] * v;
      }
    }
  });
  return y;
}

PReluGrads prelu_backward(const Tensor& x, const Tensor& slope, const Tensor& dy) {
  const int64_t c = slope_channels(x, slope);
  const int64_t rows = c > 0 ? x.numel() / c : 0;
  const float* xp = x.f32();
  const float* a = slope.f32();
  const float* dyp = dy.f32();

  PReluGrads grads;
  grads.dx = Tensor::empty(x.shape());
  float* dxp = grads.dx.f32();
  parallel_rows(rows, min_rows_for(c), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < c; ++j) {
        const int64_t i = r * c + j;
        dxp[i] = xp[i] > 0.0f ? dyp[i] : a[j] * dyp[i];
      }
    }
  });

  // dslope[j] = sum over the negative side of dy * x (x = 0 contributes 0 either way).
  std::vector<double> dslope(static_cast<std::size_t>(c));
  reduce_rows<1>(
      rows, c,
      [&](int64_t r, double* acc) {
        for (int64_t j = 0; j < c; ++j) {
          const int64_t i = r * c + j;
          if (!(xp[i] > 0.0f)) acc[j] += static_cast<double>(dyp[i]) * xp[i];
        }
      },
      dslope.data());
  grads.dslope = Tensor::empty(slope.shape());
  float* dsp = grads.dslope.f32();
  for (int64_t j = 0; j < c; ++j) dsp[j] = static_cast<float>(dslope[j]);
  return grads;
}

DropoutOut dropout_forward(const DropoutParams& p, const Tensor& x) {
  DropoutOut out;
  out.y = Tensor::empty(x.shape());
  out.mask = Tensor::empty(x.shape(), DType::u8);
  const float* xp = x.f32();
  float* yp = out.y.f32();
  uint8_t* mp = out.mask.data<uint8_t>();
  const int64_t n = x.numel();
  if (p.p == 0.0f) {  // identity; skip drawing numbers that could only ever say "keep"
    for (int64_t i = 0; i < n; ++i) {
      yp[i] = xp[i];
      mp[i] = 1;
    }
    return out;
  }
  const float keep_scale = 1.0f / (1.0f - p.p);
  const uint64_t offset =
      p.offset + (p.device_offset.defined() ? static_cast<uint64_t>(*p.device_offset.data<int64_t>()) : 0);
  // Ten Philox rounds per element make this compute-bound: threads pay off sooner than for a copy.
  parallel_elements(
      n,
      [=, &p](int64_t i) {
        const bool keep = philox::uniform(p.seed, offset + static_cast<uint64_t>(i)) >= p.p;
        mp[i] = keep ? 1 : 0;
        yp[i] = keep ? xp[i] * keep_scale : 0.0f;
      },
      8);
  return out;
}

Tensor dropout_backward(const DropoutParams& p, const Tensor& mask, const Tensor& dy) {
  const float keep_scale = 1.0f / (1.0f - p.p);
  Tensor dx = Tensor::empty(dy.shape());
  const uint8_t* mp = mask.data<uint8_t>();
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
  const int64_t n = dy.numel();
  parallel_elements(n, [=](int64_t i) { dxp[i] = mp[i] ? dyp[i] * keep_scale : 0.0f; });
  return dx;
}

}  // namespace ae::cpu

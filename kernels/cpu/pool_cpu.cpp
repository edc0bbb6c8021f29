// CPU pooling on NHWC tensors: max pooling (PyTorch semantics: padding acts as -inf, ties go to
// the first maximum in row-major window order, NaN wins) and adaptive average pooling
// (PyTorch's bins). Arguments arrive validated by kernels/pool.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/cpu_ops.h"

namespace ae::cpu {
namespace {

// PyTorch's adaptive bins: output i of `out` covers input [start, end) of `in`.
int64_t bin_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
int64_t bin_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

}  // namespace

MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = p.out_h(h), ow = p.out_w(w);
  MaxPoolOut out{Tensor::empty({n, oh, ow, c}), Tensor::empty({n, oh, ow, c}, DType::i64)};
  const float* xp = x.f32();
  float* yp = out.y.f32();
  int64_t* ap = out.argmax.data<int64_t>();

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t i = 0; i < oh; ++i) {
      // The window clipped to the image: padding never wins, it acts as -inf. The validated
      // pad <= kernel/2 rule makes the clipped window non-empty.
      const int64_t h0 = std::max<int64_t>(i * p.stride_h - p.pad_h, 0);
      const int64_t h1 = std::min<int64_t>(i * p.stride_h - p.pad_h + p.kernel_h, h);
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t w0 = std::max<int64_t>(j * p.stride_w - p.pad_w, 0);
        const int64_t w1 = std::min<int64_t>(j * p.stride_w - p.pad_w + p.kernel_w, w);
        float* best = yp + ((b * oh + i) * ow + j) * c;
        int64_t* best_at = ap + ((b * oh + i) * ow + j) * c;
        // PyTorch starts from -inf with the first in-image position as the index, so an
        // all -inf window still reports a valid position.
        for (int64_t k = 0; k < c; ++k) {
          best[k] = -std::numeric_limits<float>::infinity();
          best_at[k] = h0 * w + w0;
        }
        for (int64_t y = h0; y < h1; ++y) {
          for (int64_t xx = w0; xx < w1; ++xx) {
            const float* v = xp + ((b * h + y) * w + xx) * c;
            const int64_t at = y * w + xx;
            for (int64_t k = 0; k < c; ++k) {
              // Strictly greater: the first maximum in scan order keeps the win (PyTorch CPU).
              if (v[k] > best[k] || std::isnan(v[k])) {
                best[k] = v[k];
                best_at[k] = at;
              }
            }
          }
        }
      }
    }
  }
  return out;
}

Tensor maxpool2d_backward(const MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape) {
  const int64_t n = x_shape[0], h = x_shape[1], w = x_shape[2], c = x_shape[3];
  const int64_t oh = dy.dim(1), ow = dy.dim(2);
  const int64_t plane = h * w;
  Tensor dx = Tensor::zeros(x_shape);
  const float* dyp = dy.f32();
  const int64_t* ap = argmax.data<int64_t>();
  float* dxp = dx.f32();
  // Windows overlap, so several outputs may scatter into one input: accumulate. One thread
  // per image keeps the scatter race-free. A corrupt argmax would write out of bounds, so it
  // is checked (cheaply) and reported after the loop rather than thrown inside OpenMP.
  int64_t bad_index = -1;
#pragma omp parallel for schedule(static) reduction(max : bad_index)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t o = 0; o < oh * ow; ++o) {
      const int64_t base = (b * oh * ow + o) * c;
      for (int64_t k = 0; k < c; ++k) {
        const int64_t at = ap[base + k];
        if (at < 0 || at >= plane) {
          bad_index = std::max(bad_index, base + k);
          continue;
        }
        dxp[(b * plane + at) * c + k] += dyp[base + k];
      }
    }
  }
  AE_CHECK(bad_index < 0, "maxpool2d_backward: argmax element " << bad_index << " is "
                                                                << ap[bad_index] << ", outside the " << h << "x" << w
                                                                << " image plane of x_shape " << shape_str(x_shape));
  return dx;
}

Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = p.out_h, ow = p.out_w;
  Tensor y = Tensor::empty({n, oh, ow, c});
  const float* xp = x.f32();
  float* yp = y.f32();

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t h0 = bin_start(i, h, oh), h1 = bin_end(i, h, oh);
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t w0 = bin_start(j, w, ow), w1 = bin_end(j, w, ow);
        float* out = yp + ((b * oh + i) * ow + j) * c;
        std::memset(out, 0, static_cast<std::size_t>(c) * sizeof(float));
        for (int64_t yy = h0; yy < h1; ++yy) {
          for (int64_t xx = w0; xx < w1; ++xx) {
            const float* v = xp + ((b * h + yy) * w + xx) * c;
            for (int64_t k = 0; k < c; ++k) out[k] += v[k];
          }
        }
        const float count = static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t k = 0; k < c; ++k) out[k] /= count;
      }
    }
  }
  return y;
}

Tensor adaptive_avgpool2d_backward(const AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape) {
  const int64_t n = x_shape[0], h = x_shape[1], w = x_shape[2], c = x_shape[3];
  const int64_t oh = p.out_h, ow = p.out_w;
  Tensor dx = Tensor::zeros(x_shape);
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
  // Non-divisible sizes give overlapping bins, so each output spreads its gradient evenly over
  // its bin and the contributions accumulate. One thread per image keeps that race-free.
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t h0 = bin_start(i, h, oh), h1 = bin_end(i, h, oh);
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t w0 = bin_start(j, w, ow), w1 = bin_end(j, w, ow);
        const float* g = dyp + ((b * oh + i) * ow + j) * c;
        const float count = static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t yy = h0; yy < h1; ++yy) {
          for (int64_t xx = w0; xx < w1; ++xx) {
            float* d = dxp + ((b * h + yy) * w + xx) * c;
            for (int64_t k = 0; k < c; ++k) d[k] += g[k] / count;
          }
        }
      }
    }
  }
  return dx;
}

}  // namespace ae::cpu

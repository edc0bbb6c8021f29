// CPU pooling on NHWC tensors: max pooling (PyTorch semantics: padding acts as -inf, ties go to
// the first maximum in row-major window order, NaN wins) and adaptive average pooling
// (PyTorch's bins). Arguments arrive validated by kernels/pool.cpp. A bf16 x is widened first (max
// pooling's y is bf16 again: exact, the maximum is one of the inputs).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel_loop.h"

namespace ae::cpu {
namespace {

// PyTorch's adaptive bins: output i of `out` covers input [start, end) of `in`.
int64_t bin_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
int64_t bin_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

// A pooling window clipped to the image: rows [h0, h1), columns [w0, w1).
struct Window {
  int64_t h0 = 0, h1 = 0, w0 = 0, w1 = 0;
};

// Max over one window for all c channels of an NHWC image, with the position (y * w + x) of
// each maximum. PyTorch starts from -inf with the first in-image position as the index (so an
// all -inf window still reports a valid position), keeps the first maximum in scan order
// (strictly greater wins) and lets NaN win. Written without branches so it vectorises.
template <typename Index>
void window_max(const float* image, int64_t w, int64_t c, const Window& win, float* best, Index* best_at) {
  const Index first = static_cast<Index>(win.h0 * w + win.w0);
  for (int64_t k = 0; k < c; ++k) {
    best[k] = -std::numeric_limits<float>::infinity();
    best_at[k] = first;
  }
  for (int64_t y = win.h0; y < win.h1; ++y) {
    for (int64_t xx = win.w0; xx < win.w1; ++xx) {
      const float* v = image + (y * w + xx) * c;
      const Index at = static_cast<Index>(y * w + xx);
      for (int64_t k = 0; k < c; ++k) {
        const float value = v[k], so_far = best[k];
        const bool wins = value > so_far || std::isnan(value);
        best[k] = wins ? value : so_far;
        best_at[k] = wins ? at : best_at[k];
      }
    }
  }
}

}  // namespace

MaxPoolOut maxpool2d_forward(const MaxPool2dParams& p, const Tensor& x) {
  if (x.dtype() == DType::bf16) {  // the maximum is one of the inputs: widening and back is exact
    MaxPoolOut out = cpu::maxpool2d_forward(p, cpu::cast(x, DType::f32));
    out.y = cpu::cast(out.y, DType::bf16);
    return out;
  }
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = p.out_h(h), ow = p.out_w(w);
  MaxPoolOut out{Tensor::empty({n, oh, ow, c}), p.with_argmax ? Tensor::empty({n, oh, ow, c}, DType::i64) : Tensor()};
  const float* xp = x.f32();
  float* yp = out.y.f32();
  int64_t* ap = p.with_argmax ? out.argmax.data<int64_t>() : nullptr;
  // 32-bit positions vectorise with the floats; an image plane too big for them is impossible
  // in practice (8 GB per channel) but still handled, with 64-bit positions.
  const bool narrow = h * w <= std::numeric_limits<int32_t>::max();

  // One output row (image b, row i) per index.
  parallel_rows(n * oh, min_rows_for(ow * c * p.kernel_h * p.kernel_w), [&](int64_t row_begin, int64_t row_end) {
    std::vector<int32_t> narrow_at(static_cast<std::size_t>(narrow ? c : 0));
    std::vector<int64_t> wide_at(static_cast<std::size_t>(narrow || ap ? 0 : c));  // winners nobody keeps
    for (int64_t row = row_begin; row < row_end; ++row) {
      const int64_t b = row / oh, i = row % oh;
      // The window clipped to the image: padding never wins, it acts as -inf. The validated
      // pad <= kernel/2 rule makes the clipped window non-empty.
      Window win;
      win.h0 = std::max<int64_t>(i * p.stride_h - p.pad_h, 0);
      win.h1 = std::min<int64_t>(i * p.stride_h - p.pad_h + p.kernel_h, h);
      for (int64_t j = 0; j < ow; ++j) {
        win.w0 = std::max<int64_t>(j * p.stride_w - p.pad_w, 0);
        win.w1 = std::min<int64_t>(j * p.stride_w - p.pad_w + p.kernel_w, w);
        const int64_t at_out = ((b * oh + i) * ow + j) * c;
        const float* image = xp + b * h * w * c;
        if (narrow) {
          window_max(image, w, c, win, yp + at_out, narrow_at.data());
          if (ap) std::copy(narrow_at.begin(), narrow_at.end(), ap + at_out);
        } else {
          window_max(image, w, c, win, yp + at_out, ap ? ap + at_out : wide_at.data());
        }
      }
    }
  });
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
  // is checked (cheaply), noted per image and reported after the loop (threads must not throw).
  std::vector<int64_t> bad_in_image(static_cast<std::size_t>(n), -1);
  parallel_rows(n, min_rows_for(oh * ow * c), [&](int64_t image_begin, int64_t image_end) {
    for (int64_t b = image_begin; b < image_end; ++b) {
      int64_t bad = -1;
      for (int64_t o = 0; o < oh * ow; ++o) {
        const int64_t base = (b * oh * ow + o) * c;
        for (int64_t k = 0; k < c; ++k) {
          const int64_t at = ap[base + k];
          if (at < 0 || at >= plane) {
            bad = std::max(bad, base + k);
            continue;
          }
          dxp[(b * plane + at) * c + k] += dyp[base + k];
        }
      }
      bad_in_image[static_cast<std::size_t>(b)] = bad;
    }
  });
  const int64_t bad_index = n > 0 ? *std::max_element(bad_in_image.begin(), bad_in_image.end()) : -1;
  AE_CHECK(bad_index < 0, "maxpool2d_backward: argmax element " << bad_index << " is " << ap[bad_index]
                                                                << ", outside the " << h << "x" << w
                                                                << " image plane of x_shape " << shape_str(x_shape));
  return dx;
}

Tensor adaptive_avgpool2d_forward(const AdaptiveAvgPool2dParams& p, const Tensor& x) {
  if (x.dtype() == DType::bf16) return cpu::adaptive_avgpool2d_forward(p, cpu::cast(x, DType::f32));
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = p.out_h, ow = p.out_w;
  Tensor y = Tensor::empty({n, oh, ow, c});
  const float* xp = x.f32();
  float* yp = y.f32();

  // One output row (image b, row i) per index.
  parallel_rows(n * oh, min_rows_for(ow * c * (h / oh + 1) * (w / ow + 1)), [&](int64_t row_begin, int64_t row_end) {
    for (int64_t row = row_begin; row < row_end; ++row) {
      const int64_t b = row / oh, i = row % oh;
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
  });
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
  parallel_rows(n, min_rows_for(h * w * c), [&](int64_t image_begin, int64_t image_end) {
    for (int64_t b = image_begin; b < image_end; ++b) {
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
  });
  return dx;
}

}  // namespace ae::cpu

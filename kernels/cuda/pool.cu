// Pooling on NHWC tensors with the CPU backend's semantics (kernels/cpu/pool_cpu.cpp):
//   - max pooling: padding acts as -inf, ties go to the first maximum in row-major window order,
//     NaN wins; argmax is the i64 flat index h*W+w of the winner in its image plane;
//   - adaptive average pooling with PyTorch's bins [floor(i*H/OH), ceil((i+1)*H/OH)).
// Both backward passes are gathers over input positions (each dx element sums the outputs whose
// window covers it, in output order) instead of scatter-adds: no atomics, deterministic, and the
// same summation order as the CPU's scatter loop. Arguments arrive validated by kernels/pool.cpp.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

struct PlaneShape {
  int64_t n, h, w, c, oh, ow;
};

__device__ __forceinline__ int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// T: x's and y's storage, float or BFloat16 (the maximum is one of the inputs: y is exact either way).
template <typename T>
__global__ void maxpool_forward_kernel(PlaneShape s, ops::MaxPool2dParams p, const T* __restrict__ x,
                                       T* __restrict__ y, int64_t* __restrict__ argmax) {
  const int64_t total = s.n * s.oh * s.ow * s.c;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t k = i % s.c, j = i / s.c % s.ow, oi = i / (s.c * s.ow) % s.oh, b = i / (s.c * s.ow * s.oh);
    // The window clipped to the image; validation guarantees it is not empty.
    const int64_t h0 = max_i64(oi * p.stride_h - p.pad_h, 0), h1 = min_i64(oi * p.stride_h - p.pad_h + p.kernel_h, s.h);
    const int64_t w0 = max_i64(j * p.stride_w - p.pad_w, 0), w1 = min_i64(j * p.stride_w - p.pad_w + p.kernel_w, s.w);
    float best = -INFINITY;
    int64_t best_at = h0 * s.w + w0;  // PyTorch's index for an all -inf window
    for (int64_t yy = h0; yy < h1; ++yy) {
      for (int64_t xx = w0; xx < w1; ++xx) {
        const float v = load_as_float(x, ((b * s.h + yy) * s.w + xx) * s.c + k);
        if (v > best || isnan(v)) {
          best = v;
          best_at = yy * s.w + xx;
        }
      }
    }
    store_from_float(y, i, best);
    if (argmax) argmax[i] = best_at;  // null: inference (MaxPool2dParams::with_argmax), uniform across the grid
  }
}

// Output rows whose window [o*stride - pad, o*stride - pad + kernel) covers input row `at`,
// clipped to [0, outputs): o in [ceil((at + pad - kernel + 1) / stride), floor((at + pad) / stride)].
__device__ __forceinline__ int64_t first_window(int64_t at, int pad, int kernel, int stride) {
  const int64_t lo = at + pad - kernel + 1;
  return lo <= 0 ? 0 : (lo + stride - 1) / stride;
}
__device__ __forceinline__ int64_t last_window(int64_t at, int pad, int stride, int64_t outputs) {
  return min_i64((at + pad) / stride, outputs - 1);
}

__global__ void maxpool_backward_kernel(PlaneShape s, ops::MaxPool2dParams p, const float* __restrict__ dy,
                                        const int64_t* __restrict__ argmax, float* __restrict__ dx) {
  const int64_t total = s.n * s.h * s.w * s.c;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t k = i % s.c, xx = i / s.c % s.w, yy = i / (s.c * s.w) % s.h, b = i / (s.c * s.w * s.h);
    const int64_t at = yy * s.w + xx;
    float sum = 0.0f;
    const int64_t oi_end = last_window(yy, p.pad_h, p.stride_h, s.oh);
    const int64_t oj_begin = first_window(xx, p.pad_w, p.kernel_w, p.stride_w);
    const int64_t oj_end = last_window(xx, p.pad_w, p.stride_w, s.ow);
    for (int64_t oi = first_window(yy, p.pad_h, p.kernel_h, p.stride_h); oi <= oi_end; ++oi) {
      for (int64_t oj = oj_begin; oj <= oj_end; ++oj) {
        const int64_t o = ((b * s.oh + oi) * s.ow + oj) * s.c + k;
        if (argmax[o] == at) sum += dy[o];
      }
    }
    dx[i] = sum;
  }
}

// PyTorch's adaptive bins: output i of `out` covers input [start, end) of `in`.
__device__ __forceinline__ int64_t bin_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
__device__ __forceinline__ int64_t bin_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

// T: x's storage, float or BFloat16 (widened as it is read); y is float.
template <typename T>
__global__ void adaptive_avgpool_forward_kernel(PlaneShape s, const T* __restrict__ x, float* __restrict__ y) {
  const int64_t total = s.n * s.oh * s.ow * s.c;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t k = i % s.c, j = i / s.c % s.ow, oi = i / (s.c * s.ow) % s.oh, b = i / (s.c * s.ow * s.oh);
    const int64_t h0 = bin_start(oi, s.h, s.oh), h1 = bin_end(oi, s.h, s.oh);
    const int64_t w0 = bin_start(j, s.w, s.ow), w1 = bin_end(j, s.w, s.ow);
    float sum = 0.0f;  // float, in the CPU's order, so the two agree to the last bit or nearly
    for (int64_t yy = h0; yy < h1; ++yy) {
      for (int64_t xx = w0; xx < w1; ++xx) sum += load_as_float(x, ((b * s.h + yy) * s.w + xx) * s.c + k);
    }
    y[i] = sum / static_cast<float>((h1 - h0) * (w1 - w0));
  }
}

// Bins of `out` that contain input position `at`: bin_start(i) <= at < bin_end(i) holds exactly
// for i in [floor(at*out/in), ceil((at+1)*out/in) - 1]; the membership test below keeps the loop
// honest at the edges.
__global__ void adaptive_avgpool_backward_kernel(PlaneShape s, const float* __restrict__ dy, float* __restrict__ dx) {
  const int64_t total = s.n * s.h * s.w * s.c;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t k = i % s.c, xx = i / s.c % s.w, yy = i / (s.c * s.w) % s.h, b = i / (s.c * s.w * s.h);
    float sum = 0.0f;
    const int64_t oi_end = min_i64(((yy + 1) * s.oh + s.h - 1) / s.h, s.oh);
    const int64_t oj_begin = (xx * s.ow) / s.w, oj_end = min_i64(((xx + 1) * s.ow + s.w - 1) / s.w, s.ow);
    for (int64_t oi = (yy * s.oh) / s.h; oi < oi_end; ++oi) {
      const int64_t h0 = bin_start(oi, s.h, s.oh), h1 = bin_end(oi, s.h, s.oh);
      if (yy < h0 || yy >= h1) continue;
      for (int64_t oj = oj_begin; oj < oj_end; ++oj) {
        const int64_t w0 = bin_start(oj, s.w, s.ow), w1 = bin_end(oj, s.w, s.ow);
        if (xx < w0 || xx >= w1) continue;
        const float count = static_cast<float>((h1 - h0) * (w1 - w0));
        sum += dy[((b * s.oh + oi) * s.ow + oj) * s.c + k] / count;
      }
    }
    dx[i] = sum;
  }
}

}  // namespace

MaxPoolOut maxpool2d_forward(const ops::MaxPool2dParams& p, const Tensor& x) {
  const PlaneShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), p.out_h(x.dim(1)), p.out_w(x.dim(2))};
  MaxPoolOut out{Tensor::empty({s.n, s.oh, s.ow, s.c}, x.dtype(), x.device()),
                 p.with_argmax ? Tensor::empty({s.n, s.oh, s.ow, s.c}, DType::i64, x.device()) : Tensor()};
  const dim3 grid(blocks_for(out.y.numel(), kThreads)), block(kThreads);
  const LaunchSite site{"maxpool_forward_kernel", __FILE__, __LINE__};
  int64_t* const argmax = p.with_argmax ? out.argmax.data<int64_t>() : nullptr;
  if (x.dtype() == DType::bf16) {
    launch(site, &maxpool_forward_kernel<BFloat16>, grid, block, 0, Stream{}, s, p,
           static_cast<const BFloat16*>(x.data<BFloat16>()), out.y.data<BFloat16>(), argmax);
  } else {
    launch(site, &maxpool_forward_kernel<float>, grid, block, 0, Stream{}, s, p, static_cast<const float*>(x.f32()),
           out.y.f32(), argmax);
  }
  return out;
}

// An argmax that does not point into its own window contributes nothing here (the gather only
// looks for winners inside windows), so a corrupt argmax cannot write out of bounds.
Tensor maxpool2d_backward(const ops::MaxPool2dParams& p, const Tensor& dy, const Tensor& argmax, const Shape& x_shape) {
  const PlaneShape s{x_shape[0], x_shape[1], x_shape[2], x_shape[3], dy.dim(1), dy.dim(2)};
  Tensor dx = Tensor::empty(x_shape, DType::f32, dy.device());
  AE_LAUNCH(maxpool_backward_kernel, dim3(blocks_for(dx.numel(), kThreads)), dim3(kThreads), 0, nullptr, s, p,
            dy.f32(), argmax.data<int64_t>(), dx.f32());
  return dx;
}

Tensor adaptive_avgpool2d_forward(const ops::AdaptiveAvgPool2dParams& p, const Tensor& x) {
  const PlaneShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), p.out_h, p.out_w};
  Tensor y = Tensor::empty({s.n, s.oh, s.ow, s.c}, DType::f32, x.device());
  const dim3 grid(blocks_for(y.numel(), kThreads)), block(kThreads);
  const LaunchSite site{"adaptive_avgpool_forward_kernel", __FILE__, __LINE__};
  if (x.dtype() == DType::bf16) {
    launch(site, &adaptive_avgpool_forward_kernel<BFloat16>, grid, block, 0, Stream{}, s,
           static_cast<const BFloat16*>(x.data<BFloat16>()), y.f32());
  } else {
    launch(site, &adaptive_avgpool_forward_kernel<float>, grid, block, 0, Stream{}, s,
           static_cast<const float*>(x.f32()), y.f32());
  }
  return y;
}

Tensor adaptive_avgpool2d_backward(const ops::AdaptiveAvgPool2dParams& p, const Tensor& dy, const Shape& x_shape) {
  const PlaneShape s{x_shape[0], x_shape[1], x_shape[2], x_shape[3], p.out_h, p.out_w};
  Tensor dx = Tensor::empty(x_shape, DType::f32, dy.device());
  AE_LAUNCH(adaptive_avgpool_backward_kernel, dim3(blocks_for(dx.numel(), kThreads)), dim3(kThreads), 0, nullptr, s,
            dy.f32(), dx.f32());
  return dx;
}

}  // namespace ae::cuda

// Image ops on the device: ImageNet normalisation and PyTorch's bilinear resize (align_corners=
// False) on NHWC f32, forward and backward. The CPU backend (kernels/cpu/image_cpu.cpp) is the
// reference: the resize weights are the same host-computed floats (kernels/resize_taps.h,
// uploaded once per geometry: device_axes below), the sums run in the same order, and the
// backward is the same gather over the outputs that read each input (deterministic, no atomics). nvcc may fuse a*b+c, so results
// agree with the CPU to a float rounding or two rather than bit for bit.
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <tuple>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/resize_taps.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

using ops::BilinearTap;
using ops::NormalizeImageParams;
using ops::TapReaders;

// a[j] for a channel j < 4 by selects: indexing a kernel-parameter array with a run-time index
// would copy the whole struct to local memory (a 32-byte stack frame per thread).
__device__ __forceinline__ float channel(const float (&a)[NormalizeImageParams::kMaxChannels], int64_t j) {
  return j == 0 ? a[0] : j == 1 ? a[1] : j == 2 ? a[2] : a[3];
}

__global__ void normalize_u8_kernel(const uint8_t* __restrict__ x, NormalizeImageParams p, float* __restrict__ y,
                                    int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t j = i % c;
    y[i] = (static_cast<float>(x[i]) / 255.0f - channel(p.mean, j)) / channel(p.std, j);
  }
}

__global__ void normalize_f32_kernel(const float* __restrict__ x, NormalizeImageParams p, float* __restrict__ y,
                                     int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t j = i % c;
    y[i] = (x[i] - channel(p.mean, j)) / channel(p.std, j);
  }
}

__global__ void normalize_backward_kernel(const float* __restrict__ dy, NormalizeImageParams p, float* __restrict__ dx,
                                          int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = dy[i] / channel(p.std, i % c);
}

struct ResizeShape {
  int64_t n, h, w, c, out_h, out_w;
};

// One output element per iteration: sum_y wy * (sum_x wx * x), starting from 0 as on the CPU.
__global__ void resize_forward_kernel(const float* __restrict__ x, const BilinearTap* __restrict__ taps_y,
                                      const BilinearTap* __restrict__ taps_x, float* __restrict__ y, ResizeShape s) {
  const int64_t total = s.n * s.out_h * s.out_w * s.c;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t j = i % s.c;
    const int64_t ox = (i / s.c) % s.out_w;
    const int64_t oy = (i / (s.c * s.out_w)) % s.out_h;
    const int64_t b = i / (s.c * s.out_w * s.out_h);
    const BilinearTap ty = taps_y[oy], tx = taps_x[ox];
    const float* r0 = x + ((b * s.h + ty.i0) * s.w) * s.c + j;
    const float* r1 = x + ((b * s.h + ty.i1) * s.w) * s.c + j;
    float along0 = 0.0f, along1 = 0.0f, acc = 0.0f;
    along0 += tx.w0 * r0[tx.i0 * s.c];
    along0 += tx.w1 * r0[tx.i1 * s.c];
    along1 += tx.w0 * r1[tx.i0 * s.c];
    along1 += tx.w1 * r1[tx.i1 * s.c];
    acc += ty.w0 * along0;
    acc += ty.w1 * along1;
    y[i] = acc;
  }
}

__device__ __forceinline__ float weight_of(const BilinearTap& t, int32_t i) {
  return (t.i0 == i ? t.w0 : 0.0f) + (t.i1 == i ? t.w1 : 0.0f);
}

// One input element per iteration, gathering over the output rows and columns that read it.
__global__ void resize_backward_kernel(const float* __restrict__ dy, const BilinearTap* __restrict__ taps_y,
                                       const BilinearTap* __restrict__ taps_x, const TapReaders* __restrict__ readers_y,
                                       const TapReaders* __restrict__ readers_x, float* __restrict__ dx, ResizeShape s) {
  const int64_t total = s.n * s.h * s.w * s.c;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t j = i % s.c;
    const int32_t ix = static_cast<int32_t>((i / s.c) % s.w);
    const int32_t iy = static_cast<int32_t>((i / (s.c * s.w)) % s.h);
    const int64_t b = i / (s.c * s.w * s.h);
    const TapReaders ry = readers_y[iy], rx = readers_x[ix];
    float acc = 0.0f;
    for (int32_t oy = ry.first; oy < ry.last; ++oy) {
      const float wy = weight_of(taps_y[oy], iy);
      const float* dyr = dy + ((b * s.out_h + oy) * s.out_w) * s.c + j;
      float along = 0.0f;
      for (int32_t ox = rx.first; ox < rx.last; ++ox) along += weight_of(taps_x[ox], ix) * dyr[ox * s.c];
      acc += wy * along;
    }
    dx[i] = acc;
  }
}

// A host array of POD records as a device tensor of bytes (Tensor has no struct dtype).
template <typename T>
Tensor upload(const std::vector<T>& records, Device device) {
  Tensor host = Tensor::empty({static_cast<int64_t>(records.size() * sizeof(T))}, DType::u8);
  if (!records.empty()) std::memcpy(host.raw(), records.data(), records.size() * sizeof(T));
  return host.to(device);
}

template <typename T>
const T* records(const Tensor& bytes) {
  return reinterpret_cast<const T*>(bytes.data<uint8_t>());
}

// The sampling plan of both axes on the device.
struct DeviceAxes {
  Tensor taps_y, taps_x, readers_y, readers_x;
  DeviceAxes(int64_t h, int64_t w, const ops::ResizeBilinearParams& p, Device device, bool with_readers) {
    const ops::BilinearAxis ay = ops::bilinear_axis(h, p.out_h), ax = ops::bilinear_axis(w, p.out_w);
    taps_y = upload(ay.taps, device);
    taps_x = upload(ax.taps, device);
    if (with_readers) {
      readers_y = upload(ay.readers, device);
      readers_x = upload(ax.readers, device);
    }
  }
};

// The plans of the most recent geometries stay on the device. Uploading a plan per call is a host
// transfer per resize, which a graph capture refuses (enhancement and saliency capture the resize
// of img::preprocess_eval_ops; the eager call before the capture puts the plan here) and which
// waits for the copy in an eager loop. A plan is a few kB. One dropped while a captured graph
// holds its address is not reused before the graph goes (device_memory.h: deferred blocks).
std::shared_ptr<const DeviceAxes> device_axes(int64_t h, int64_t w, const ops::ResizeBilinearParams& p, Device device,
                                              bool with_readers) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int, bool>;
  struct Entry {
    Key key;
    std::shared_ptr<const DeviceAxes> axes;
  };
  constexpr std::size_t kKept = 32;
  static std::mutex mutex;
  static auto* recent = new std::list<Entry>();  // most recent first; never destroyed (device memory
                                                 // must not be freed after the runtime's teardown)
  const Key key{h, w, p.out_h, p.out_w, device.index, with_readers};
  const std::lock_guard<std::mutex> lock(mutex);
  for (auto it = recent->begin(); it != recent->end(); ++it) {
    if (it->key != key) continue;
    recent->splice(recent->begin(), *recent, it);
    return recent->front().axes;
  }
  recent->push_front({key, std::make_shared<const DeviceAxes>(h, w, p, device, with_readers)});
  if (recent->size() > kKept) recent->pop_back();
  return recent->front().axes;
}

}  // namespace

Tensor normalize_image(const NormalizeImageParams& p, const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  const int64_t n = x.numel(), c = x.dim(-1);
  if (x.dtype() == DType::u8) {
    AE_LAUNCH(normalize_u8_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
              static_cast<const uint8_t*>(x.data<uint8_t>()), p, y.f32(), n, c);
  } else {
    AE_LAUNCH(normalize_f32_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
              static_cast<const float*>(x.f32()), p, y.f32(), n, c);
  }
  return y;
}

Tensor normalize_image_backward(const NormalizeImageParams& p, const Tensor& dy) {
  Tensor dx = Tensor::empty(dy.shape(), DType::f32, dy.device());
  const int64_t n = dy.numel(), c = dy.dim(-1);
  AE_LAUNCH(normalize_backward_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(dy.f32()), p, dx.f32(), n, c);
  return dx;
}

Tensor resize_bilinear_forward(const ops::ResizeBilinearParams& p, const Tensor& x) {
  const ResizeShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), p.out_h, p.out_w};
  if (s.out_h == s.h && s.out_w == s.w) return x.clone();  // identity, bit-exact
  Tensor y = Tensor::empty({s.n, s.out_h, s.out_w, s.c}, DType::f32, x.device());
  const std::shared_ptr<const DeviceAxes> axes = device_axes(s.h, s.w, p, x.device(), /*with_readers=*/false);
  const int64_t total = y.numel();
  AE_LAUNCH(resize_forward_kernel, dim3(blocks_for(total, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(x.f32()), records<BilinearTap>(axes->taps_y),
            records<BilinearTap>(axes->taps_x), y.f32(), s);
  return y;
}

Tensor resize_bilinear_backward(const ops::ResizeBilinearParams& p, const Tensor& dy, const Shape& x_shape) {
  const ResizeShape s{x_shape[0], x_shape[1], x_shape[2], x_shape[3], p.out_h, p.out_w};
  if (s.out_h == s.h && s.out_w == s.w) return dy.clone();
  Tensor dx = Tensor::empty(x_shape, DType::f32, dy.device());
  const std::shared_ptr<const DeviceAxes> axes = device_axes(s.h, s.w, p, dy.device(), /*with_readers=*/true);
  const int64_t total = dx.numel();
  AE_LAUNCH(resize_backward_kernel, dim3(blocks_for(total, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(dy.f32()), records<BilinearTap>(axes->taps_y),
            records<BilinearTap>(axes->taps_x), records<TapReaders>(axes->readers_y),
            records<TapReaders>(axes->readers_x), dx.f32(), s);
  return dx;
}

}  // namespace ae::cuda

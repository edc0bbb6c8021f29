// Photo edits on the device (ops::photo_edit_forward / photo_edit_backward_theta; the model is in
// kernels/ops.h). The per-pixel code is kernels/photo_edit_pixel.h, the same source the CPU backend
// runs, so the two differ only in how pixels are split and summed and in nvcc's contraction of a*b+c.
//   1. coefficients_kernel: one thread turns theta into the per-call scalars (in double, rounded to
//      float once), on the device, so a call never waits for theta to come back to the host.
//   2. forward_kernel: elementwise over pixels (grid-stride).
//   3. backward_partials_kernel: each thread sums its pixels' contributions in double in its own
//      column of shared memory; the block adds its columns with a fixed tree and writes one row of
//      P partial sums per block.
//   4. backward_totals_kernel: one thread per parameter adds the block rows in block order.
// The grid is a function of the pixel count alone, so dtheta is the same bits on every run. No atomics.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/photo_edit_pixel.h"

namespace ae::cuda {
namespace {

using ops::PhotoEditCoefficients;

constexpr int kThreads = 256;  // forward and backward blocks (the backward's tree needs a power of 2)
constexpr unsigned kMaxPartialBlocks = 512;  // rows of partial sums in the backward (131,072 threads)

__device__ __forceinline__ float unit_value(float v) { return v; }
__device__ __forceinline__ float unit_value(uint8_t v) { return static_cast<float>(v) / 255.0f; }

__global__ void coefficients_kernel(const float* __restrict__ theta, int knots,
                                    PhotoEditCoefficients* __restrict__ out) {
  if (first_index() == 0) *out = ops::photo_edit_coefficients(knots, theta);
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const PhotoEditCoefficients* __restrict__ coefficients,
                               float* __restrict__ y, int64_t pixels) {
  const PhotoEditCoefficients& c = *coefficients;
  for (int64_t i = first_index(); i < pixels; i += index_stride()) {
    const float rgb[3] = {unit_value(x[3 * i]), unit_value(x[3 * i + 1]), unit_value(x[3 * i + 2])};
    ops::photo_edit_pixel(c, rgb, y + 3 * i);
  }
}

// Dynamic shared memory: params * kThreads doubles, parameter-major (column tid of row q is thread
// tid's running sum for parameter q; consecutive threads touch consecutive doubles).
template <typename T>
__global__ __launch_bounds__(kThreads) void backward_partials_kernel(
    const T* __restrict__ x, const float* __restrict__ dy, const PhotoEditCoefficients* __restrict__ coefficients,
    double* __restrict__ partials, int64_t pixels, int params) {
  double* const acc = dynamic_shared<double>();
  const int tid = static_cast<int>(threadIdx.x);
  for (int q = 0; q < params; ++q) acc[q * kThreads + tid] = 0.0;
  const PhotoEditCoefficients& c = *coefficients;
  for (int64_t i = first_index(); i < pixels; i += index_stride()) {
    const float rgb[3] = {unit_value(x[3 * i]), unit_value(x[3 * i + 1]), unit_value(x[3 * i + 2])};
    const float g[3] = {dy[3 * i], dy[3 * i + 1], dy[3 * i + 2]};
    ops::photo_edit_accumulate(c, rgb, g, acc + tid, kThreads);
  }
  // The same fixed tree for every parameter: column tid += column tid + half.
  for (int half = kThreads / 2; half > 0; half /= 2) {
    __syncthreads();
    if (tid < half) {
      for (int q = 0; q < params; ++q) acc[q * kThreads + tid] += acc[q * kThreads + tid + half];
    }
  }
  __syncthreads();
  if (tid < params) partials[static_cast<int64_t>(blockIdx.x) * params + tid] = acc[tid * kThreads];
}

__global__ void backward_totals_kernel(const double* __restrict__ partials, int64_t blocks,
                                       const PhotoEditCoefficients* __restrict__ coefficients,
                                       float* __restrict__ dtheta, int params) {
  for (int64_t q = first_index(); q < params; q += index_stride()) {
    double total = 0.0;
    for (int64_t b = 0; b < blocks; ++b) total += partials[b * params + q];
    dtheta[q] = static_cast<float>(total * coefficients->grad_scale[q]);
  }
}

// A device buffer holding one PhotoEditCoefficients (Tensor has no struct dtype; the allocator
// aligns to 256 bytes), filled by coefficients_kernel from theta.
struct DeviceCoefficients {
  Tensor storage;
  const PhotoEditCoefficients* ptr = nullptr;
  DeviceCoefficients(const ops::PhotoEditParams& p, const Tensor& theta)
      : storage(Tensor::empty({static_cast<int64_t>(sizeof(PhotoEditCoefficients))}, DType::u8, theta.device())) {
    auto* out = reinterpret_cast<PhotoEditCoefficients*>(storage.data<uint8_t>());
    AE_LAUNCH(coefficients_kernel, dim3(1), dim3(1), 0, nullptr, static_cast<const float*>(theta.f32()),
              p.tone_knots, out);
    ptr = out;
  }
};

}  // namespace

Tensor photo_edit_forward(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta) {
  const DeviceCoefficients c(p, theta);
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  const int64_t pixels = x.numel() / 3;
  const dim3 grid(blocks_for(pixels, kThreads));
  if (x.dtype() == DType::u8) {
    AE_LAUNCH(forward_kernel<uint8_t>, grid, dim3(kThreads), 0, nullptr,
              static_cast<const uint8_t*>(x.data<uint8_t>()), c.ptr, y.f32(), pixels);
  } else {
    AE_LAUNCH(forward_kernel<float>, grid, dim3(kThreads), 0, nullptr, static_cast<const float*>(x.f32()), c.ptr,
              y.f32(), pixels);
  }
  return y;
}

Tensor photo_edit_backward_theta(const ops::PhotoEditParams& p, const Tensor& x, const Tensor& theta,
                                 const Tensor& dy) {
  const DeviceCoefficients c(p, theta);
  const int params = static_cast<int>(p.theta_size());
  const int64_t pixels = x.numel() / 3;
  const unsigned blocks = blocks_for(pixels, kThreads, kMaxPartialBlocks);
  Tensor partials = Tensor::empty({static_cast<int64_t>(blocks) * params * static_cast<int64_t>(sizeof(double))},
                                  DType::u8, x.device());
  double* const partial_ptr = reinterpret_cast<double*>(partials.data<uint8_t>());
  const std::size_t shared_bytes = sizeof(double) * static_cast<std::size_t>(params) * kThreads;
  if (x.dtype() == DType::u8) {
    AE_LAUNCH(backward_partials_kernel<uint8_t>, dim3(blocks), dim3(kThreads), shared_bytes, nullptr,
              static_cast<const uint8_t*>(x.data<uint8_t>()), static_cast<const float*>(dy.f32()), c.ptr,
              partial_ptr, pixels, params);
  } else {
    AE_LAUNCH(backward_partials_kernel<float>, dim3(blocks), dim3(kThreads), shared_bytes, nullptr,
              static_cast<const float*>(x.f32()), static_cast<const float*>(dy.f32()), c.ptr, partial_ptr, pixels,
              params);
  }
  Tensor dtheta = Tensor::empty({params}, DType::f32, x.device());
  AE_LAUNCH(backward_totals_kernel, dim3(1), dim3(kWarp), 0, nullptr, static_cast<const double*>(partial_ptr),
            static_cast<int64_t>(blocks), c.ptr, dtheta.f32(), params);
  return dtheta;
}

}  // namespace ae::cuda

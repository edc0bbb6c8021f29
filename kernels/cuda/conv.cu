// Convolution forward as an implicit GEMM over NHWC, float32 on CUDA cores (the "v1" kernel the
// tensor-core versions will be checked against). GEMM view:
//   y[m, o] = sum_k A[m, k] * W[o, k],  m = (n, oh, ow), k = (kh, kw, c)
// A is never materialised: each tile of A is gathered from x on the fly (zero outside the
// padding), and W is the OHWI weight read as an [O, K] matrix. A block computes a 64x64 tile of
// y with 256 threads, each accumulating a 4x4 sub-tile, staging 16-wide K slices in shared memory.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace ae::cuda {
namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kThreads = 256;

struct ConvGeometry {
  int64_t n, h, w, c;     // input
  int64_t oh, ow, o;      // output
  int kh, kw, sh, sw, ph, pw;
  AE_HOST_DEVICE int64_t m() const { return n * oh * ow; }
  AE_HOST_DEVICE int64_t k() const { return static_cast<int64_t>(kh) * kw * c; }
};

// A[m, k]: the input value under kernel tap k for output pixel m, or 0 in the padding.
__device__ __forceinline__ float gather_input(const ConvGeometry& g, const float* __restrict__ x, int64_t m,
                                              int64_t k) {
  const int64_t ow = m % g.ow, oh = m / g.ow % g.oh, img = m / (g.ow * g.oh);
  const int64_t c = k % g.c, tap = k / g.c;
  const int64_t kw = tap % g.kw, kh = tap / g.kw;
  const int64_t ih = oh * g.sh - g.ph + kh, iw = ow * g.sw - g.pw + kw;
  if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return 0.0f;
  return x[((img * g.h + ih) * g.w + iw) * g.c + c];
}

__global__ __launch_bounds__(kThreads) void conv2d_forward_kernel(ConvGeometry g, const float* __restrict__ x,
                                                                  const float* __restrict__ w, float* __restrict__ y) {
  AE_SHARED(float, a_tile, kTileK * kTileM);  // [k][m]
  AE_SHARED(float, b_tile, kTileK * kTileN);  // [k][o]
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 16, ty = tid / 16;  // this thread's 4x4 sub-tile: rows ty*4.., columns tx*4..
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM, n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int64_t M = g.m(), K = g.k();
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    for (int i = tid; i < kTileM * kTileK; i += kThreads) {
      const int mm = i / kTileK, kk = i % kTileK;  // consecutive threads walk k: channels are contiguous
      const int64_t m = m0 + mm, k = k0 + kk;
      a_tile[kk * kTileM + mm] = (m < M && k < K) ? gather_input(g, x, m, k) : 0.0f;
    }
    for (int i = tid; i < kTileN * kTileK; i += kThreads) {
      const int nn = i / kTileK, kk = i % kTileK;
      const int64_t o = n0 + nn, k = k0 + kk;
      b_tile[kk * kTileN + nn] = (o < g.o && k < K) ? w[o * K + k] : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = a_tile[kk * kTileM + ty * 4 + i];
      for (int j = 0; j < 4; ++j) b[j] = b_tile[kk * kTileN + tx * 4 + j];
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();  // the next slice overwrites the tiles
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t o = n0 + tx * 4 + j;
      if (o < g.o) y[m * g.o + o] = acc[i][j];
    }
  }
}

}  // namespace

Tensor conv2d_forward(const ops::Conv2dParams& p, const Tensor& x, const Tensor& w) {
  ConvGeometry g{};
  g.n = x.dim(0), g.h = x.dim(1), g.w = x.dim(2), g.c = x.dim(3);
  g.o = w.dim(0);
  g.kh = p.kernel_h, g.kw = p.kernel_w, g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w;
  g.oh = p.out_h(g.h), g.ow = p.out_w(g.w);
  Tensor y = Tensor::empty({g.n, g.oh, g.ow, g.o}, DType::f32, x.device());
  const int64_t m_tiles = (g.m() + kTileM - 1) / kTileM, n_tiles = (g.o + kTileN - 1) / kTileN;
  AE_CHECK(n_tiles <= 65535, "conv2d_forward: " << g.o << " output channels exceed the CUDA kernel's grid");
  AE_LAUNCH(conv2d_forward_kernel, dim3(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles)),
            dim3(kThreads), 0, nullptr, g, x.f32(), w.f32(), y.f32());
  return y;
}

}  // namespace ae::cuda

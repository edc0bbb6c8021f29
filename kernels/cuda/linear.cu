// Fully connected layer on the shared float32 tiled GEMM (kernels/cuda/tiled_gemm.h). Row-major
// throughout, as the CPU backend: x [N,in], w [out,in] (PyTorch's layout), y [N,out].
//   forward  y[r, o]  = sum_i x[r, i] * w[o, i] + bias[o]
//   dx       dx[r, i] = sum_o dy[r, o] * w[o, i]
//   dw       dw[o, i] = sum_r dy[r, o] * x[r, i]
//   dbias    dbias[o] = sum_r dy[r, o]   (one thread per column, rows in order, double)
// Every output element is computed by one thread in a fixed order: deterministic without any
// split of the reduction. Arguments arrive validated by kernels/linear.cpp.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/tiled_gemm.h"

namespace ae::cuda {
namespace {

constexpr int kThreads = 256;

// A row-major matrix read as A[row, k] = p[row * ld + k].
struct RowsAlongK {
  static constexpr bool kAlongK = true;
  const float* __restrict__ p;
  int64_t ld;
  __device__ __forceinline__ float operator()(int64_t row, int64_t k) const { return p[row * ld + k]; }
};

// A row-major matrix read transposed: A[row, k] = p[k * ld + row].
struct RowsAcrossK {
  static constexpr bool kAlongK = false;
  const float* __restrict__ p;
  int64_t ld;
  __device__ __forceinline__ float operator()(int64_t row, int64_t k) const { return p[k * ld + row]; }
};

struct StoreWithBias {
  float* __restrict__ y;
  const float* __restrict__ bias;  // null without a bias
  int64_t ld;
  __device__ __forceinline__ void operator()(int64_t r, int64_t c, int64_t, float v) const {
    y[r * ld + c] = bias ? v + bias[c] : v;
  }
};

gemm::GemmShape whole_k(int64_t m, int64_t n, int64_t k) {
  gemm::GemmShape s;
  s.m = m;
  s.n = n;
  s.k = k;
  s.k_per_split = (k + gemm::kTileK - 1) / gemm::kTileK * gemm::kTileK;
  if (s.k_per_split == 0) s.k_per_split = gemm::kTileK;  // an empty batch: one slice storing zeros
  return s;
}

__global__ void column_sums_kernel(const float* __restrict__ dy, int64_t rows, int64_t cols, float* __restrict__ out) {
  for (int64_t c = first_index(); c < cols; c += index_stride()) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * cols + c];
    out[c] = static_cast<float>(s);
  }
}

}  // namespace

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t n = x.dim(0), in = w.dim(1), out = w.dim(0);
  Tensor y = Tensor::empty({n, out}, DType::f32, x.device());
  gemm::run_tiled_gemm(LaunchSite{"linear_forward (tiled GEMM)", __FILE__, __LINE__}, whole_k(n, out, in),
                       RowsAlongK{x.f32(), in}, RowsAlongK{w.f32(), in},
                       StoreWithBias{y.f32(), bias.defined() ? bias.f32() : nullptr, out});
  return y;
}

LinearGrads linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, bool has_bias, bool need_dx) {
  const int64_t n = x.dim(0), in = w.dim(1), out = w.dim(0);
  const Device dev = x.device();
  LinearGrads g;
  g.dw = Tensor::empty({out, in}, DType::f32, dev);
  gemm::run_tiled_gemm(LaunchSite{"linear_backward dw (tiled GEMM)", __FILE__, __LINE__}, whole_k(out, in, n),
                       RowsAcrossK{dy.f32(), out}, RowsAcrossK{x.f32(), in}, StoreWithBias{g.dw.f32(), nullptr, in});
  if (need_dx) {
    g.dx = Tensor::empty({n, in}, DType::f32, dev);
    gemm::run_tiled_gemm(LaunchSite{"linear_backward dx (tiled GEMM)", __FILE__, __LINE__}, whole_k(n, in, out),
                         RowsAlongK{dy.f32(), out}, RowsAcrossK{w.f32(), in}, StoreWithBias{g.dx.f32(), nullptr, in});
  }
  if (has_bias) {
    g.dbias = Tensor::empty({out}, DType::f32, dev);
    AE_LAUNCH(column_sums_kernel, dim3(blocks_for(out, kThreads)), dim3(kThreads), 0, nullptr, dy.f32(), n, out,
              g.dbias.f32());
  }
  return g;
}

}  // namespace ae::cuda

// Convolution forward as an implicit GEMM over NHWC, float32 on CUDA cores (the "v1" kernel the
// tensor-core versions will be checked against). GEMM view:
//   y[m, o] = sum_k A[m, k] * W[o, k],  m = (n, oh, ow), k = (kh, kw, c)
// A is never materialised: each tile of A is gathered from x on the fly (zero outside the
// padding), and W is the OHWI weight read as an [O, K] matrix. The tiling (64x64 output tiles, 256
// threads with 4x4 sub-tiles, K slices staged in shared memory) is the shared GEMM of tiled_gemm.h,
// which the backward passes (conv_backward.cu) and the linear layer use too. With conv_math() tf32
// or bf16 the pipelined implicit-GEMM kernel of conv_implicit_gemm.cu runs instead (16-byte cp.async
// when C % 4 == 0, 4-byte otherwise), which gives the same bits as the tensor-core GEMM of
// tiled_gemm_tc.h fed by the loaders below; that one remains the fallback (huge grids) and can be
// forced with set_conv_forward_kernel for tests. When the output has few tiles and K is long
// (ResNet layer4 / layer3 at small batch), the pipelined kernel splits K over grid.z into partial
// outputs in a workspace, summed in slice order by sum_conv_slices (conv_implicit_gemm.h,
// "Split-K"): deterministic, but not bitwise equal to the unsplit kernel (another summation
// order); set_conv_forward_split_k(1) turns it off. bf16 x and w (both) run the pipelined kernel
// with bf16 staging in bf16 math, or are widened to f32 first (conv_implicit_gemm.h, "bf16 storage").
// The C = 3 stem is padded to 4 channels first in tf32 / bf16 (conv_backward.h, "stem path").
#include <atomic>

#include "kernels/conv_geometry.h"
#include "kernels/cuda/channel_tile_stats.h"
#include "kernels/cuda/conv_backward.h"
#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/conv_stats.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/tiled_gemm_tc.h"
#include "kernels/emu/profile.h"

namespace ae::cuda {
namespace {

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

// A[m, k] as a loader for the shared tiled GEMM; k = (kh, kw, c) walks x's channels.
struct InputPatch {
  static constexpr bool kAlongK = true;
  ConvGeometry g;
  const float* __restrict__ x;
  __device__ __forceinline__ float operator()(int64_t m, int64_t k) const { return gather_input(g, x, m, k); }
};

// W[o, k] = w[o, kh, kw, c]: the OHWI weight read as an [O, K] matrix, rows `row` floats apart.
struct WeightRow {
  static constexpr bool kAlongK = true;
  const float* __restrict__ w;
  int64_t row;
  __device__ __forceinline__ float operator()(int64_t o, int64_t kk) const { return w[o * row + kk]; }
};

struct StoreOutput {
  float* __restrict__ y;
  int64_t o;
  __device__ __forceinline__ void operator()(int64_t m, int64_t oc, int64_t, float v) const { y[m * o + oc] = v; }
};

// StoreOutput, then the stored tile's per-channel statistics (one K slice: the tile is final).
struct StoreOutputGatherStats : StoreOutput {
  double* __restrict__ partials;
  __device__ __forceinline__ void after_tile(int64_t m0, int rows, int64_t n0, int cols, double* scratch) const {
    tile_channel_stats<gemm::kThreads, gemm::kTileN>(y, o, m0, rows, n0, cols, m0 / gemm::kTileM, partials, scratch);
  }
};

constexpr int kStatsTileRows = 64;  // the tiled GEMMs' and the separate pass's tiles
static_assert(gemm::kTileM == kStatsTileRows, "conv_output_stats_doubles sizes for 64-row tiles");

std::atomic<int64_t> g_stats_epilogue{0}, g_stats_separate{0};

// y = conv(x, w), and with `stats` its per-tile statistics (conv_stats.h). x and w are both f32 or
// both bf16 (conv_implicit_gemm.h, "bf16 storage"). w is read as an [O, K] matrix whose rows are
// w_row floats apart (0: K, a dense OHWI weight; the stem path's padded f32 weight is wider).
Tensor forward(const ops::Conv2dParams& p, const Tensor& x, const Tensor& w, ConvOutputStats* stats,
               int64_t w_row = 0) {
  const ConvGeometry g(p, x.shape(), w.dim(0));
  const ConvMath math = conv_math();
  const bool bf16_storage = x.dtype() == DType::bf16;
  if (bf16_storage && !conv_forward_bf16_storage_runs(math, g, x.raw(), w.raw())) {
    note_conv_forward_bf16_widened();  // exact: the f32 path computes on the same values
    return forward(p, cuda::cast(x, DType::f32), cuda::cast(w, DType::f32), stats);
  }
  if (!bf16_storage && conv_stem_padding_applies(g.c, true)) {  // the stem path (conv_backward.h)
    note_conv_forward_stem_padded();
    const Tensor w4 = pad_stem_weight(w);
    return forward(p, resize_channels(x, 4), w4, stats, w4.dim(1));
  }
  if (w_row == 0) w_row = g.k();
  Tensor y = Tensor::empty({g.n, g.oh, g.ow, g.o}, DType::f32, x.device());
  // Split-K (late layers: few output tiles, long K): partial y per slice in a workspace from the
  // tensor allocator (no host synchronisation: CUDA Graph capture stays possible), summed in slice
  // order. Only when the pipelined kernel runs (the plan is for it; nothing is planned in f32).
  const ConvForwardSplit split = math == ConvMath::f32 ? ConvForwardSplit{} : conv_forward_split_plan(g);
  Tensor partials;
  if (split.slices > 1 && conv_forward_pipelined_supported(g, x.raw(), w.raw()) &&
      conv_forward_kernel() != ConvForwardKernel::tiled) {
    partials = Tensor::empty({split.slices * g.m() * g.o}, DType::f32, x.device());
  }
  ae::emu::profile_next_launch_flops(2.0 * g.m() * g.o * g.k(), conv_math_name(math));  // emulated-device profile
  const LaunchSite pipelined{"conv2d_forward (pipelined implicit GEMM)", __FILE__, __LINE__};
  const ConvForwardSplit used_split = partials.defined() ? split : ConvForwardSplit{};
  float* const used_partials = partials.defined() ? partials.f32() : nullptr;
  const bool ran = bf16_storage ? conv_forward_pipelined_bf16(pipelined, g, x.data<BFloat16>(), w.data<BFloat16>(),
                                                              y.f32(), used_split, used_partials, stats)
                                : conv_forward_pipelined(pipelined, math, g, x.f32(), w.f32(), y.f32(), used_split,
                                                         used_partials, stats, w_row);
  AE_CHECK(ran || !bf16_storage, "conv2d_forward: the bf16-storage kernel refused " << x.desc() << " * " << w.desc()
                                                                                     << " after accepting it");
  if (ran) {
    if (partials.defined()) {
      sum_conv_slices(partials.f32(), split.slices, g.m() * g.o, y.f32());
      if (stats != nullptr) {  // no block held a final tile: the statistics take a pass of their own
        stats->tile_rows = kStatsTileRows;
        ++g_stats_separate;
        launch(LaunchSite{"conv2d_forward (statistics after the split-K sum)", __FILE__, __LINE__},
               &channel_tile_stats_kernel<gemm::kThreads, gemm::kTileN>,
               dim3(static_cast<unsigned>((g.m() + kStatsTileRows - 1) / kStatsTileRows),
                    static_cast<unsigned>((g.o + gemm::kTileN - 1) / gemm::kTileN)),
               dim3(gemm::kThreads), 0, Stream{}, static_cast<const float*>(y.f32()), g.m(), g.o, kStatsTileRows,
               stats->partials);
      }
    } else if (stats != nullptr) {
      ++g_stats_epilogue;
    }
    return y;
  }
  if (math == ConvMath::f32) {
    note_conv_forward_f32_tiled();
  } else {
    note_conv_forward_tc_tiled();
  }
  gemm::GemmShape s;
  s.m = g.m();
  s.n = g.o;
  s.k = g.k();
  s.k_per_split = (s.k + gemm::kTileK - 1) / gemm::kTileK * gemm::kTileK;  // one slice
  const LaunchSite site{"conv2d_forward (implicit GEMM)", __FILE__, __LINE__};
  if (stats != nullptr) {
    stats->tile_rows = kStatsTileRows;
    ++g_stats_epilogue;
    gemm::run_gemm(site, math, s, InputPatch{g, x.f32()}, WeightRow{w.f32(), w_row},
                   StoreOutputGatherStats{{y.f32(), g.o}, stats->partials});
  } else {
    gemm::run_gemm(site, math, s, InputPatch{g, x.f32()}, WeightRow{w.f32(), w_row}, StoreOutput{y.f32(), g.o});
  }
  return y;
}

}  // namespace

Tensor conv2d_forward(const ops::Conv2dParams& p, const Tensor& x, const Tensor& w) { return forward(p, x, w, nullptr); }

Tensor conv2d_forward_with_stats(const ops::Conv2dParams& p, const Tensor& x, const Tensor& w, ConvOutputStats& stats) {
  AE_CHECK(stats.partials != nullptr, "conv2d_forward_with_stats: no buffer for the statistics");
  return forward(p, x, w, &stats);
}

int64_t conv_output_stats_doubles(int64_t m, int64_t o) { return (m + kStatsTileRows - 1) / kStatsTileRows * 2 * o; }

ConvStatsLaunches conv_stats_launches() { return {g_stats_epilogue.load(), g_stats_separate.load()}; }

namespace {

// One thread per element of W' [O,3,3,C]: a copy, plus A at the centre tap (one float add, as the
// CPU's, so the fold is bit for bit the CPU's).
__global__ void fold_centre_tap_kernel(const float* __restrict__ w, const float* __restrict__ a,
                                       float* __restrict__ out, int64_t n, int64_t c) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const int64_t tap = (i / c) % 9, o = i / (9 * c);
    out[i] = tap == 4 ? w[i] + a[o * c + i % c] : w[i];
  }
}

}  // namespace

Tensor conv_fold_centre_tap(const Tensor& w, const Tensor& a) {
  Tensor out = Tensor::empty(w.shape(), DType::f32, w.device());
  const int64_t n = w.numel(), c = w.dim(3);
  if (n == 0) return out;
  constexpr int kThreads = 256;
  AE_LAUNCH(fold_centre_tap_kernel, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, nullptr,
            static_cast<const float*>(w.f32()), static_cast<const float*>(a.f32()), out.f32(), n, c);
  return out;
}

}  // namespace ae::cuda

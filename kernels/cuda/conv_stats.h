#pragma once
// The training forward's convolution + BatchNorm on the device (ops::conv2d_batchnorm_train): the
// convolution kernels gather the per-channel statistics of their output in their epilogue
// (channel_tile_stats.h) and the BatchNorm is applied with the residual and ReLU in one pass
// (fused.cu). Against the unfused sequence (conv, then batchnorm_forward_train's two
// statistics passes and its normalising pass, then add_relu) that leaves the output's re-read in
// L2 instead of three reads and a write of it from memory.
//
// Which kernel gathers the statistics:
//   - the pipelined tensor-core forward (tf32/bf16, unsplit) and both tiled GEMMs (f32 and the
//     tensor-core fallback), each block over its own output tile (64 or 128 rows);
//   - the split-K forward cannot (no block holds a finished tile before the slice sum): one
//     statistics-only pass over y follows the sum (channel_tile_stats_kernel, 64-row tiles).
// Host code only (no kernel dialect), so tests can include it.
#include <cstdint>

#include "kernels/ops.h"

namespace ae::cuda {

// Per-tile statistics of a forward's output y [M, O]: partials[(t * 2 + 0) * O + o] is the sum of
// tile t's rows of channel o, partials[(t * 2 + 1) * O + o] their squared deviations from the
// tile's own mean (channel_tile_stats.h); tile t holds rows [t * tile_rows, min(M, (t + 1) *
// tile_rows)).
struct ConvOutputStats {
  double* partials = nullptr;  // room for conv_output_stats_doubles(M, O), given by the caller
  int64_t tile_rows = 0;       // set by conv2d_forward_with_stats: 64 or 128
};
// The doubles a ConvOutputStats needs for M rows and O channels (the smallest tiles, 64 rows).
int64_t conv_output_stats_doubles(int64_t m, int64_t o);

// conv2d_forward (conv.cu), the same bits, with the output's per-tile statistics in `stats`.
Tensor conv2d_forward_with_stats(const ops::Conv2dParams& p, const Tensor& x, const Tensor& w, ConvOutputStats& stats);

// How conv2d_forward_with_stats gathered statistics since the process started (monotonic; tests
// take differences around a call).
struct ConvStatsLaunches {
  int64_t epilogue = 0;  // in the convolution kernel's epilogue
  int64_t separate = 0;  // in a pass of their own after the split-K slice sum
};
ConvStatsLaunches conv_stats_launches();

// batchnorm.cu: the training BatchNorm's statistics from per-tile partials of its input x [M, C]:
// save_mean, save_invstd and the running update, as batchnorm_forward_train computes them from its
// own two passes (FinishTrainStatistics), in double from the exact decomposition of the sums.
void batchnorm_train_statistics_from_tiles(const ops::BatchNormParams& p, const ConvOutputStats& stats, int64_t m,
                                           const Tensor& gamma, Tensor& running_mean, Tensor& running_var,
                                           Tensor& save_mean, Tensor& save_invstd);

}  // namespace ae::cuda

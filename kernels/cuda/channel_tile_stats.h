#pragma once
// Per-channel statistics of a convolution's output gathered in the epilogue of the kernels that
// write it (kernel dialect; host side in conv_stats.h). The training BatchNorm after a
// convolution needs the mean and variance of every output channel; computed on their own they
// cost two reads of the whole output (channel_reduce.h's two passes). Here each block, once it has
// stored its output tile, reads that tile back (it is in L2, just written by this block;
// __syncthreads makes the block's global writes visible to the whole block) and writes, per
// channel, the tile's sum and its squared deviations from the *tile's* mean, in double:
//   partials[(tile * 2 + 0) * O + n] = S_t  = sum_r y[r, n]
//   partials[(tile * 2 + 1) * O + n] = Q_t  = sum_r (y[r, n] - S_t / n_t)^2
// over the tile's n_t rows. The totals (channel_stats_from_tiles) are then exact decompositions,
//   mean = sum_t S_t / M,  sum_r (y - mean)^2 = sum_t [Q_t + n_t (S_t / n_t - mean)^2],
// so the variance keeps the two-pass form's accuracy (no E[y^2] - E[y]^2 cancellation), and every
// sum runs in a fixed order: the result depends on the data and the tiling, never on scheduling.
#include "kernels/cuda/device.h"

namespace ae::cuda {

// Statistics of rows [m0, m0 + rows) x channels [n0, n0 + cols) of y [*, o] (row-major, o
// channels per row) into tile `tile`'s partials. kThreads threads of the block take part (all of
// them must call it: it synchronises); kCols >= cols channel lanes, kThreads / kCols row lanes.
// `scratch`: kThreads + kCols doubles of shared memory no one else uses during the call.
template <int kThreads, int kCols>
__device__ __forceinline__ void tile_channel_stats(const float* y, int64_t o, int64_t m0, int rows, int64_t n0, int cols,
                                                   int64_t tile, double* __restrict__ partials, double* scratch) {
  static_assert(kThreads % kCols == 0, "whole row lanes");
  constexpr int kRowLanes = kThreads / kCols;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane_c = tid % kCols, lane_r = tid / kCols;
  const bool live = lane_c < cols;
  const float* col = y + m0 * o + n0 + lane_c;
  double* lane_part = scratch;           // [kThreads]
  double* tile_mean = scratch + kThreads;  // [kCols]

  double s = 0.0;
  if (live) {
    for (int r = lane_r; r < rows; r += kRowLanes) s += col[static_cast<int64_t>(r) * o];
  }
  lane_part[tid] = s;
  __syncthreads();
  if (lane_r == 0) {
    double total = 0.0;
    for (int l = 0; l < kRowLanes; ++l) total += lane_part[l * kCols + lane_c];
    tile_mean[lane_c] = total / rows;
    if (live) partials[(tile * 2) * o + n0 + lane_c] = total;
  }
  __syncthreads();
  double q = 0.0;
  if (live) {
    const double mean = tile_mean[lane_c];
    for (int r = lane_r; r < rows; r += kRowLanes) {
      const double d = col[static_cast<int64_t>(r) * o] - mean;
      q += d * d;
    }
  }
  lane_part[tid] = q;
  __syncthreads();
  if (lane_r == 0 && live) {
    double total = 0.0;
    for (int l = 0; l < kRowLanes; ++l) total += lane_part[l * kCols + lane_c];
    partials[(tile * 2 + 1) * o + n0 + lane_c] = total;
  }
}

// The statistics alone, for outputs whose kernel gathers none (the split-K forward, whose y only
// exists after the slice sum): block (tile, channel block) as the epilogue would have done it.
template <int kThreads, int kCols>
__global__ __launch_bounds__(kThreads) void channel_tile_stats_kernel(const float* __restrict__ y, int64_t m, int64_t o,
                                                                      int tile_rows, double* __restrict__ partials) {
  AE_SHARED(double, scratch, kThreads + kCols);
  const int64_t tile = blockIdx.x;
  const int64_t m0 = tile * tile_rows, n0 = static_cast<int64_t>(blockIdx.y) * kCols;
  const int rows = static_cast<int>(m - m0 < tile_rows ? m - m0 : tile_rows);
  const int cols = static_cast<int>(o - n0 < kCols ? o - n0 : kCols);
  tile_channel_stats<kThreads, kCols>(y, o, m0, rows, n0, cols, tile, partials, scratch);
}

}  // namespace ae::cuda

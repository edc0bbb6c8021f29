#pragma once
// Deterministic per-channel reductions over the rows of an [M, C] matrix (every channels-last
// tensor once its leading dimensions are flattened), accumulated in double. Used by batch norm
// (statistics, dgamma/dbeta) and PReLU (dslope).
//
// Two stages, both in a fixed order, so the result depends only on the data and the shape:
//   1. channel_partials_kernel: block (cb, chunk) covers `channel_lanes` channels and a fixed slice
//      of rows; its threads stride over the slice, then one thread per channel adds the row lanes in
//      lane order. Partial sums go to partials[chunk][k][c] (double).
//   2. channel_totals_kernel: one thread per channel adds the chunks in chunk order and hands the K
//      totals to a Finish functor (which writes statistics, gradients, coefficients...).
// No float atomics anywhere (DESIGN.md).
//
// Value functor: `void operator()(int64_t row, int64_t c, double* acc) const` adds its K values
// for element (row, c) to acc[0..K). Finish functor: `void operator()(int64_t c, const double* sums) const`.
#include "kernels/cuda/channel_reduce_layout.h"
#include "kernels/cuda/launch.h"
#include "runtime/tensor.h"

namespace ae::cuda {

template <int K, class Value>
__global__ __launch_bounds__(kChannelReduceThreads) void channel_partials_kernel(ChannelReduceLayout l, Value value,
                                                                                 double* __restrict__ partials) {
  AE_SHARED(double, lane_sums, K * kChannelReduceThreads);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane_c = tid % l.channel_lanes, lane_r = tid / l.channel_lanes;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * l.channel_lanes + lane_c;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = l.rows * chunk / l.row_chunks, end = l.rows * (chunk + 1) / l.row_chunks;
  double acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0;
  if (c < l.channels) {
    for (int64_t r = begin + lane_r; r < end; r += l.row_lanes) value(r, c, acc);
  }
  for (int k = 0; k < K; ++k) lane_sums[k * kChannelReduceThreads + tid] = acc[k];
  __syncthreads();
  if (lane_r == 0 && c < l.channels) {
    for (int k = 0; k < K; ++k) {
      double total = 0.0;
      for (int lr = 0; lr < l.row_lanes; ++lr) total += lane_sums[k * kChannelReduceThreads + lr * l.channel_lanes + lane_c];
      partials[(chunk * K + k) * l.channels + c] = total;
    }
  }
}

template <int K, class Finish>
__global__ void channel_totals_kernel(ChannelReduceLayout l, const double* __restrict__ partials, Finish finish) {
  for (int64_t c = first_index(); c < l.channels; c += index_stride()) {
    double sums[K];
    for (int k = 0; k < K; ++k) {
      double total = 0.0;
      for (int64_t chunk = 0; chunk < l.row_chunks; ++chunk) total += partials[(chunk * K + k) * l.channels + c];
      sums[k] = total;
    }
    finish(c, sums);
  }
}

// Runs both stages; `op` names the calling op in launch errors. The partials live in a temporary
// device buffer (doubles in a u8 tensor: Tensor has no f64).
template <int K, class Value, class Finish>
void reduce_channels(const char* op, int64_t rows, int64_t channels, Device device, const Value& value,
                     const Finish& finish) {
  if (channels == 0) return;
  const ChannelReduceLayout l = channel_reduce_layout(rows, channels);
  Tensor partials = Tensor::empty({l.row_chunks * K * channels * static_cast<int64_t>(sizeof(double))}, DType::u8, device);
  double* partial_ptr = reinterpret_cast<double*>(partials.data<uint8_t>());
  launch(LaunchSite{op, __FILE__, __LINE__}, &channel_partials_kernel<K, Value>,
         dim3(static_cast<unsigned>(l.channel_blocks), static_cast<unsigned>(l.row_chunks)),
         dim3(kChannelReduceThreads), 0, Stream{}, l, value, partial_ptr);
  launch(LaunchSite{op, __FILE__, __LINE__}, &channel_totals_kernel<K, Finish>,
         dim3(blocks_for(channels, kChannelReduceThreads)), dim3(kChannelReduceThreads), 0, Stream{}, l,
         static_cast<const double*>(partial_ptr), finish);
}

}  // namespace ae::cuda

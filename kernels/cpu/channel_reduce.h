#pragma once
// Deterministic per-channel reductions over the rows of a [M, C] matrix (the layout of every
// "channels last" tensor once its leading dimensions are flattened), accumulated in double.
//
// Why not `#pragma omp parallel for reduction(+:...)`: its combination order depends on the
// number of threads and the runtime, so the same input could give different bits from run to
// run. Here the rows are cut into a fixed number of blocks that depends only on M; each block
// sums its rows in row order into its own partial, and the partials are added in block order.
// Which thread computes which block does not matter, so the result is the same bits every run
// and for any thread count.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/thread_pool.h"

namespace ae::cpu {

// Block count is a function of M alone: enough blocks to keep the threads busy, few enough
// that the partial buffers stay small (kMaxBlocks * K * C doubles).
inline int64_t reduce_block_count(int64_t rows) {
  constexpr int64_t kMaxBlocks = 64;
  constexpr int64_t kMinRowsPerBlock = 16;
  return std::clamp<int64_t>(rows / kMinRowsPerBlock, 1, kMaxBlocks);
}

// Computes K sums per channel: out[k*C + c] = sum over rows r of the k-th value that
// add_row(r, acc) adds to acc[k*C + c]. add_row must only add to acc (it sees a zeroed
// block partial at the start of each block). out must hold K*C doubles.
template <int K, typename AddRow>
void reduce_rows(int64_t rows, int64_t channels, AddRow&& add_row, double* out) {
  const int64_t blocks = reduce_block_count(rows);
  const int64_t width = K * channels;
  std::vector<double> partial(static_cast<std::size_t>(blocks * width), 0.0);
  const auto sum_blocks = [&](int64_t block_begin, int64_t block_end) {
    for (int64_t b = block_begin; b < block_end; ++b) {
      double* acc = partial.data() + b * width;
      const int64_t begin = rows * b / blocks;
      const int64_t end = rows * (b + 1) / blocks;
      for (int64_t r = begin; r < end; ++r) add_row(r, acc);
    }
  };
  // Small inputs stay on the calling thread: waking workers would cost more than the sums.
  if (rows * channels > 32768) {
    parallel_rows(blocks, 1, sum_blocks);
  } else {
    sum_blocks(0, blocks);
  }
  std::fill(out, out + width, 0.0);
  for (int64_t b = 0; b < blocks; ++b) {
    const double* acc = partial.data() + b * width;
    for (int64_t i = 0; i < width; ++i) out[i] += acc[i];
  }
}

}  // namespace ae::cpu

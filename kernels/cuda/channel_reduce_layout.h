#pragma once
// How the per-channel reductions of channel_reduce.h cut an [M, C] matrix into blocks. Plain host
// code (no kernel dialect), so tests can include it to choose shapes that exercise several chunks.
#include <algorithm>
#include <cstdint>

namespace ae::cuda {

constexpr int kChannelReduceThreads = 256;

struct ChannelReduceLayout {
  int64_t rows = 0, channels = 0;
  int channel_lanes = 1;  // threads of a block across channels: a power of two <= 32
  int row_lanes = kChannelReduceThreads;
  int64_t channel_blocks = 0;
  int64_t row_chunks = 1;
};

// A function of (rows, channels) only.
inline ChannelReduceLayout channel_reduce_layout(int64_t rows, int64_t channels) {
  ChannelReduceLayout l;
  l.rows = rows;
  l.channels = channels;
  while (l.channel_lanes < 32 && l.channel_lanes < channels) l.channel_lanes *= 2;
  l.row_lanes = kChannelReduceThreads / l.channel_lanes;
  l.channel_blocks = (channels + l.channel_lanes - 1) / l.channel_lanes;
  // At least 16 rows per thread, at most 256 chunks (enough blocks to fill a large GPU).
  constexpr int64_t kRowsPerThread = 16, kMaxChunks = 256;
  l.row_chunks = std::clamp<int64_t>(rows / (kRowsPerThread * l.row_lanes), 1, kMaxChunks);
  return l;
}

}  // namespace ae::cuda

#pragma once
// Kernels that walk many tensors in one launch (the optimisers' multi-tensor steps, the gradient
// packing of the NCCL all-reduce) give each tensor a run of blocks in proportion to its size and
// record where each run starts: tensor k owns blocks [first_block[k], first_block[k + 1]), and an
// empty tensor owns none, so no block is idle and a block never straddles two tensors.
#include <cstdint>

#include "kernels/cuda/device.h"

namespace ae::cuda {

// Far below gridDim.x's 2^31 - 1: a launch is cut before it would need more blocks.
constexpr int64_t kMaxBlocksPerLaunch = int64_t{1} << 30;

// The tensor that owns `block`: the last k < count with first_block[k] <= block (binary search;
// first_block[0] == 0 and the runs are non-decreasing).
__device__ __forceinline__ int owner_of_block(const int64_t* first_block, int count, int64_t block) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_block[mid] <= block) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace ae::cuda

#pragma once
// Deterministic block reductions: a fixed shuffle tree inside each warp, then one warp over the
// warp totals. The result depends only on the inputs and the launch shape, never on timing, so
// losses and gradients are bitwise repeatable (DESIGN.md: no atomicAdd on floats in reductions).
#include "kernels/cuda/device.h"

namespace ae::cuda {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sum over the block; the result is valid in thread 0. Every thread of the block must call it,
// and blockDim.x must be a multiple of 32 (blockDim.y = blockDim.z = 1).
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  AE_SHARED(T, warp_totals, 32);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarp, warp = tid / kWarp;
  const int warps = static_cast<int>(blockDim.x) / kWarp;
  v = warp_sum(v);
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  T total = T(0);
  if (warp == 0) {
    total = warp_sum(lane < warps ? warp_totals[lane] : T(0));
  }
  __syncthreads();  // warp_totals may be reused by the next call
  return total;
}

}  // namespace ae::cuda

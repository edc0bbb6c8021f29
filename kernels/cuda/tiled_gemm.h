#pragma once
// The float32 CUDA-core GEMM shared by the convolution backward passes and the linear layer:
//   out[m, n] = sum_{k in this block's K range} A[m, k] * B[n, k]
// A and B are never materialised by the caller: each is a loader functor `float operator()(row, k)`
// that gathers (or returns 0 for) one element, so a convolution is an implicit GEMM over NHWC.
// A block of 256 threads computes a 64x64 tile of out, each thread a 4x4 sub-tile, staging
// 16-wide K slices of both operands in shared memory (the same scheme as conv.cu's forward).
//
// grid.z splits K into fixed slices of `k_per_split` (a multiple of kTileK); the Store functor
// receives the slice index, so a caller can write per-slice partials to a workspace and reduce them
// in a fixed order afterwards (deterministic split-K, no float atomics).
//
// A loader declares `static constexpr bool kAlongK`: true when consecutive k are adjacent in
// memory (consecutive threads then walk k while staging), false when consecutive rows are.
//
// A Store may also read back the tile it stored (StoreWithTileEpilogue): after every thread of
// the block has stored, the block calls store.after_tile(m0, rows, n0, cols, scratch) once, all
// threads together, with the tile's origin and extent and at least kTileScratchDoubles doubles of
// shared memory (the operand tiles, no longer read). The convolution forward gathers the training
// BatchNorm's statistics there (channel_tile_stats.h).
#include "kernels/cuda/launch.h"
#include "runtime/error.h"

namespace ae::cuda::gemm {

constexpr int kTileM = 64, kTileN = 64, kTileK = 64, kThreads = 256;
// Shared tiles are [k][row] with one float of padding per k row, so that staging stores along
// k (kAlongK loaders) do not all land in the same shared-memory bank.
constexpr int kStrideA = kTileM + 1, kStrideB = kTileN + 1;

constexpr int kTileScratchDoubles = 2 * kThreads;

template <class S>
concept StoreWithTileEpilogue = requires(const S& s, int64_t i, int n, double* scratch) {
  s.after_tile(i, n, i, n, scratch);
};

struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  int64_t k_per_split = 0;  // K range of grid.z slice s: [s*k_per_split, min(k, (s+1)*k_per_split))
};

// After the stores of a block's tile: the Store's after_tile, when it has one. Every thread calls it.
template <class Store>
__device__ __forceinline__ void finish_tile(const Store& store, const GemmShape& s, int64_t m0, int64_t n0,
                                            void* scratch) {
  if constexpr (StoreWithTileEpilogue<Store>) {
    __syncthreads();  // the tile is stored (global writes visible block-wide) and the operand tiles are free
    const int rows = static_cast<int>(s.m - m0 < kTileM ? s.m - m0 : kTileM);
    const int cols = static_cast<int>(s.n - n0 < kTileN ? s.n - n0 : kTileN);
    store.after_tile(m0, rows, n0, cols, static_cast<double*>(scratch));
  }
}

// Copies rows [row0, row0 + kRows) x k [k0, k0 + kTileK) of an operand into tile[k][row],
// zero outside [0, rows) x [k0, k_end).
template <int kRows, int kStride, class Load>
__device__ __forceinline__ void stage_operand(const Load& load, float* tile, int64_t row0, int64_t rows, int64_t k0,
                                              int64_t k_end) {
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kTileK; i += kThreads) {
    const int rr = Load::kAlongK ? i / kTileK : i % kRows;
    const int kk = Load::kAlongK ? i % kTileK : i / kRows;
    const int64_t r = row0 + rr, k = k0 + kk;
    tile[kk * kStride + rr] = (r < rows && k < k_end) ? load(r, k) : 0.0f;
  }
}

// Two resident blocks per SM is plenty for latency hiding here; asking for no more lets ptxas use
// up to 128 registers (with a plain bound it capped sm_80 at 64 and spilled the gather indices).
template <class LoadA, class LoadB, class Store>
__global__ __launch_bounds__(kThreads, 2) void tiled_gemm_kernel(GemmShape s, LoadA load_a, LoadB load_b, Store store) {
  AE_SHARED(float, a_tile, kTileK * kStrideA);
  AE_SHARED(float, b_tile, kTileK * kStrideB);
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 16, ty = tid / 16;  // this thread's 4x4 sub-tile: rows ty*4.., columns tx*4..
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM, n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int64_t split = blockIdx.z;
  const int64_t k_begin = split * s.k_per_split;
  const int64_t k_end = k_begin + s.k_per_split < s.k ? k_begin + s.k_per_split : s.k;
  float acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    stage_operand<kTileM, kStrideA>(load_a, a_tile, m0, s.m, k0, k_end);
    stage_operand<kTileN, kStrideB>(load_b, b_tile, n0, s.n, k0, k_end);
    __syncthreads();
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = a_tile[kk * kStrideA + ty * 4 + i];
      for (int j = 0; j < 4; ++j) b[j] = b_tile[kk * kStrideB + tx * 4 + j];
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    __syncthreads();  // the next slice overwrites the tiles
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= s.m) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx * 4 + j;
      if (n < s.n) store(m, n, split, acc[i][j]);
    }
  }
  static_assert(sizeof(float) * kTileK * kStrideA >= sizeof(double) * kTileScratchDoubles, "scratch fits in a_tile");
  finish_tile(store, s, m0, n0, a_tile);
}

// Launches the GEMM over the whole of out (every element of every slice is stored, zero when its K
// range is empty). `site` names the op for launch errors.
// The grid of a GEMM: one block per 64x64 output tile and K slice (shared with the tensor-core
// variant in tiled_gemm_tc.h, whose block tile is the same).
inline dim3 gemm_grid(const LaunchSite& site, const GemmShape& s) {
  AE_CHECK(s.k_per_split > 0 && s.k_per_split % kTileK == 0,
           site.kernel << ": K slice " << s.k_per_split << " must be a positive multiple of " << kTileK);
  const int64_t m_tiles = (s.m + kTileM - 1) / kTileM, n_tiles = (s.n + kTileN - 1) / kTileN;
  const int64_t splits = s.k > 0 ? (s.k + s.k_per_split - 1) / s.k_per_split : 1;
  AE_CHECK(n_tiles <= 65535 && splits <= 65535 && m_tiles <= 2147483647,
           site.kernel << ": GEMM " << s.m << "x" << s.n << "x" << s.k << " exceeds the kernel's grid");
  return dim3(static_cast<unsigned>(m_tiles), static_cast<unsigned>(n_tiles), static_cast<unsigned>(splits));
}

template <class LoadA, class LoadB, class Store>
void run_tiled_gemm(const LaunchSite& site, const GemmShape& s, const LoadA& load_a, const LoadB& load_b,
                    const Store& store) {
  launch(site, &tiled_gemm_kernel<LoadA, LoadB, Store>, gemm_grid(site, s), dim3(kThreads), 0, Stream{}, s, load_a,
         load_b, store);
}

}  // namespace ae::cuda::gemm

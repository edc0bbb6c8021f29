#pragma once
// The pieces the two pipelined implicit-GEMM convolution kernels share (kernel dialect; included by
// conv_implicit_gemm.cu, forward and backward-data, and conv_wgrad_igemm.cu, backward-weight): the
// 3-stage cp.async ring and its one loop (run_pipeline), the block tilings, the mma sweep over one
// k-step's fragments, the paired stores, and the host-side tile and K-tile rules. What each kernel
// keeps to itself is its stage layout (which operand dimension a stage row runs along), its copies
// and its fragment reads; see the top of each .cu file, and conv_implicit_gemm.cu's for why the
// results are bitwise those of the generic tensor-core kernel (tiled_gemm_tc.h).
#include <cstddef>
#include <cstdint>
#if defined(AE_EMULATED_DEVICE)
#include <bit>

#include "kernels/emu/profile.h"
#endif

#include "kernels/cuda/launch.h"
#include "kernels/cuda/tiled_gemm_tc.h"

// Loops with constant trip counts must be unrolled for the accumulators and fragments to live in
// registers (nvcc otherwise puts acc[][][] in local memory); g++ would warn on the nvcc pragma.
#if defined(AE_EMULATED_DEVICE)
#define AE_IGEMM_UNROLL
#else
#define AE_IGEMM_UNROLL _Pragma("unroll")
#endif

namespace ae::cuda::igemm {

constexpr int kStages = 3;
constexpr int kTileK = 32;        // k per stage (floats of a stage row forward; stage rows backward-weight)
constexpr int kChunksPerRow = 8;  // 16-byte chunks per forward stage row
static_assert(kTileK * 4 == kChunksPerRow * 16, "a forward stage row is 8 chunks of 16 bytes");
static_assert(gemm::kTileK % kTileK == 0, "the generic kernel's K slices are whole numbers of our tiles");

// A block tiling: kBM x kBN outputs, kWarpsM x kWarpsN warps. The stage holds kTileK k of kBM
// A rows and kBN B rows, in either orientation.
template <int kBM, int kBN, int kWarpsM, int kWarpsN>
struct Tiles {
  static constexpr int kBlockM = kBM, kBlockN = kBN;
  static constexpr int kThreads = kWarp * kWarpsM * kWarpsN;
  static constexpr int kWarpTileM = kBM / kWarpsM, kWarpTileN = kBN / kWarpsN;
  static constexpr int kMmaTilesM = kWarpTileM / 16, kMmaTilesN = kWarpTileN / 8;
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // forward: rows one pass of the block copies
  static constexpr int kLoadsA = kBM / kRowsPerPass, kLoadsB = kBN / kRowsPerPass;
  static constexpr int kStageFloats = (kBM + kBN) * kTileK;
  static constexpr std::size_t kSharedBytes = sizeof(float) * kStages * kStageFloats;
  static_assert(kBM % kRowsPerPass == 0 && kBN % kRowsPerPass == 0, "whole copy passes");
  static_assert(kRowsPerPass % 8 == 0, "a copy pass covers whole swizzle periods");
  static_assert(kWarpTileM % 16 == 0 && kWarpTileN % 16 == 0, "warp tiles of m16 tiles and pairs of n8 tiles");
};
// 128x128 blocks take 64x64 warp tiles (4 warps), as CUTLASS's sm80 tensor-op defaults do: per mma
// k-step a warp reads 4 A + 4 B ldmatrix.x4 for 32 mma (64x32 warp tiles: 4 + 2 for 16), a third
// less shared-memory reading per FLOP (the emulated profile's counts, bench/RESULTS.md "64x64 warp
// tiles"), and at 242-255 registers two 128-thread blocks fit an sm_90 SM where one 256-thread
// block of 64x32 warps (153-168 registers) did. Not yet timed on a GPU.
using Tiles64 = Tiles<64, 64, 2, 2>;     // 4 warps of 32x32
using Tiles128 = Tiles<128, 128, 2, 2>;  // 4 warps of 64x64

// Two adjacent floats as one 8-byte access (p 8-byte aligned). The emulated device copies the 8
// bytes at once as well and reports them as one access (kernels/emu/profile.h, load_reported), so
// that its profile sees the one access the GPU makes (two 4-byte loads would count a bank conflict
// the GPU does not have), in every build.
__device__ __forceinline__ void load_pair(const float* p, float& lo, float& hi) {
#if defined(AE_EMULATED_DEVICE)
  uint64_t bits;
  ::ae::emu::load_reported(&bits, p, sizeof bits);
  lo = std::bit_cast<float>(static_cast<uint32_t>(bits));
  hi = std::bit_cast<float>(static_cast<uint32_t>(bits >> 32));
#else
  const float2 v = *reinterpret_cast<const float2*>(p);
  lo = v.x;
  hi = v.y;
#endif
}

// One float of a stage (backward-weight's fragment words). The emulated device reports the read
// (load_reported) so that its profile counts it in every build, as it does load_pair's.
__device__ __forceinline__ float load_word(const float* p) {
#if defined(AE_EMULATED_DEVICE)
  float v;
  ::ae::emu::load_reported(&v, p, sizeof v);
  return v;
#else
  return *p;
#endif
}

__device__ __forceinline__ void store_pair(float* p, float lo, float hi) {
#if defined(AE_EMULATED_DEVICE)
  const uint64_t bits = std::bit_cast<uint32_t>(lo) | (uint64_t{std::bit_cast<uint32_t>(hi)} << 32);
  ::ae::emu::store_reported(p, &bits, sizeof bits);
#else
  *reinterpret_cast<float2*>(p) = make_float2(lo, hi);
#endif
}

// The cp.async ring over k_tiles K tiles (conv_implicit_gemm.cu, "Pipeline"): issue_tile(stage)
// issues this thread's copies of the next K tile into `stage` (and advances its own k position);
// compute(stage) runs the mma of a stage whose copies have landed block-wide.
template <class Issue, class Compute>
__device__ __forceinline__ void run_pipeline(int k_tiles, Issue&& issue_tile, Compute&& compute) {
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) issue_tile(s);
    cp_async_commit();  // always, even empty: group counting is the same in every case
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait_group<kStages - 2>();  // this thread's copies of tile kt have landed
    __syncthreads();                     // everyone's have; and stage (kt-1) % 3 is no longer read
    if (kt + kStages - 1 < k_tiles) issue_tile((kt + kStages - 1) % kStages);
    cp_async_commit();
    compute(kt % kStages);
  }
}

// acc += A * B over one k-step's fragments of a warp tile.
template <class Math, class T>
__device__ __forceinline__ void mma_warp_tile(float (&acc)[T::kMmaTilesM][T::kMmaTilesN][4],
                                              const uint32_t (&a)[T::kMmaTilesM][4],
                                              const uint32_t (&b)[T::kMmaTilesN][2]) {
  AE_IGEMM_UNROLL
  for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
    AE_IGEMM_UNROLL
    for (int ni = 0; ni < T::kMmaTilesN; ++ni) Math::mma(acc[mi][ni], a[mi], b[ni]);
  }
}

// Blocks of 128x128 only when there are at least as many as a large GPU has SMs (H200: 132; two
// such blocks fit an SM, so this is half a wave); below that the 64x64 tiles give 4x the blocks.
// A guess to be replaced by measurements.
constexpr int64_t kLargeTileMinBlocks = 132;

// The automatic tile choice for an m x n output computed `slices` times (split-K).
inline bool large_tiles_pay(int64_t m, int64_t n, int64_t slices = 1) {
  return ((m + 127) / 128) * ((n + 127) / 128) * slices >= kLargeTileMinBlocks;
}

// 32-wide K tiles covering a K range of length k as the generic kernel's 64-wide slices do.
AE_HOST_DEVICE int k_tiles_of(int64_t k) {
  static_assert(gemm::kTileK == 2 * kTileK, "two of our tiles per generic K slice");
  return static_cast<int>(2 * ((k + gemm::kTileK - 1) / gemm::kTileK));
}

inline bool aligned(const void* p, std::uintptr_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

}  // namespace ae::cuda::igemm

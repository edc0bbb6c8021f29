#pragma once
// The tensor-core variant of the shared tiled GEMM (tiled_gemm.h): same problem, same loader
// functors, same K slicing and Store interface, so the convolution's im2col index logic is written
// once and every conv kernel can run in either arithmetic:
//   out[m, n] = sum_{k in this block's K range} A[m, k] * B[n, k]
// with A and B rounded to the tensor-core input type as they are staged into shared memory and
// the products accumulated in float32 by mma.sync (kernels/cuda/mma.h).
//
// A block of 256 threads (8 warps) computes a 64x64 tile of out; warp w owns rows 32*(w % 2)..+32
// and columns 16*(w / 2)..+16, i.e. 2x2 mma tiles of 16x8. K is staged in slices of kTileK = 64
// elements (as in tiled_gemm.h, so K slice sizes chosen for one GEMM suit the other).
//
// Shared tiles hold 32-bit words in [row][word] order, a word being what an mma operand register
// holds: one tf32 element, or two bf16 elements adjacent in k. Both instructions then read the same
// word coordinates (mma.h), and the word index is XOR-swizzled by row so that the 32 lanes of a
// fragment load hit 32 different banks (rows g = 0..7 times words tig = 0..3). Staging stores are
// conflict-free for loaders that walk k; loaders that walk rows (kAlongK false) store with 4-way
// conflicts, traded for coalesced global loads. Nothing here has been timed on a GPU yet: this is
// the straightforward version (no ldmatrix, no cp.async double buffering) to measure first.
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/mma.h"
#include "kernels/cuda/tiled_gemm.h"

namespace ae::cuda::gemm {

// TF32: one element per word, mma.m16n8k8 consumes 8 k per step (4 + 4 words).
struct Tf32Math {
  static constexpr int kElemsPerWord = 1;
  static constexpr int kStepK = 8;
  __device__ __forceinline__ static uint32_t pack(const float* v) { return to_tf32(v[0]); }
  __device__ __forceinline__ static void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    mma_m16n8k8_tf32(d, a, b, d);
  }
};

// BF16: two k-adjacent elements per word, mma.m16n8k16 consumes 16 k per step (also 4 + 4 words).
struct Bf16Math {
  static constexpr int kElemsPerWord = 2;
  static constexpr int kStepK = 16;
  __device__ __forceinline__ static uint32_t pack(const float* v) { return pack_bf16x2(v[0], v[1]); }
  __device__ __forceinline__ static void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    mma_m16n8k16_bf16(d, a, b, d);
  }
};

constexpr int kWarpTileM = 32, kWarpTileN = 16;  // 2 x 4 warps cover the 64 x 64 block tile
constexpr int kMmaM = 16, kMmaN = 8;

// Word (row, word) of a tile with kWords words per row. kWords is a multiple of 32, so the XOR
// (which only flips bits 2..4 of the word) stays inside the row.
template <int kWords>
__device__ __forceinline__ int swizzled(int row, int word) {
  return row * kWords + (word ^ ((row & 7) << 2));
}

// Rounds rows [row0, row0 + kRows) x k [k0, k0 + kTileK) of an operand into packed words,
// zero outside [0, rows) x [k0, k_end). Threads walk words in the order the loader reads memory
// fastest (along k, or along rows) so that global loads stay coalesced.
template <class Math, int kRows, class Load>
__device__ __forceinline__ void stage_words(const Load& load, uint32_t* tile, int64_t row0, int64_t rows, int64_t k0,
                                            int64_t k_end) {
  constexpr int kWords = kTileK / Math::kElemsPerWord;
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kWords; i += kThreads) {
    const int rr = Load::kAlongK ? i / kWords : i % kRows;
    const int ww = Load::kAlongK ? i % kWords : i / kRows;
    const int64_t r = row0 + rr, k = k0 + static_cast<int64_t>(ww) * Math::kElemsPerWord;
    float v[Math::kElemsPerWord];
    for (int e = 0; e < Math::kElemsPerWord; ++e) v[e] = (r < rows && k + e < k_end) ? load(r, k + e) : 0.0f;
    tile[swizzled<kWords>(rr, ww)] = Math::pack(v);
  }
}

template <class Math, class LoadA, class LoadB, class Store>
__global__ __launch_bounds__(kThreads, 2) void tiled_gemm_tc_kernel(GemmShape s, LoadA load_a, LoadB load_b,
                                                                    Store store) {
  constexpr int kWords = kTileK / Math::kElemsPerWord;
  constexpr int kWordsPerStep = Math::kStepK / Math::kElemsPerWord;  // 8 for both types
  AE_SHARED(uint32_t, a_tile, kTileM * kWords);
  AE_SHARED(uint32_t, b_tile, kTileN * kWords);
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  const int g = lane >> 2, tig = lane & 3;
  const int warp_m = (warp % 2) * kWarpTileM, warp_n = (warp / 2) * kWarpTileN;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM, n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int64_t split = blockIdx.z;
  const int64_t k_begin = split * s.k_per_split;
  const int64_t k_end = k_begin + s.k_per_split < s.k ? k_begin + s.k_per_split : s.k;
  float acc[2][2][4] = {};  // [m16 tile][n8 tile][C fragment element]
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    stage_words<Math, kTileM>(load_a, a_tile, m0, s.m, k0, k_end);
    stage_words<Math, kTileN>(load_b, b_tile, n0, s.n, k0, k_end);
    __syncthreads();
    for (int w0 = 0; w0 < kWords; w0 += kWordsPerStep) {
      uint32_t a[2][4], b[2][2];
      for (int mi = 0; mi < 2; ++mi) {
        for (int r = 0; r < 4; ++r) {
          a[mi][r] = a_tile[swizzled<kWords>(warp_m + mi * kMmaM + g + 8 * (r & 1), w0 + tig + 4 * (r >> 1))];
        }
      }
      for (int ni = 0; ni < 2; ++ni) {
        for (int r = 0; r < 2; ++r) b[ni][r] = b_tile[swizzled<kWords>(warp_n + ni * kMmaN + g, w0 + tig + 4 * r)];
      }
      for (int mi = 0; mi < 2; ++mi) {
        for (int ni = 0; ni < 2; ++ni) Math::mma(acc[mi][ni], a[mi], b[ni]);
      }
    }
    __syncthreads();  // the next slice overwrites the tiles
  }
  for (int mi = 0; mi < 2; ++mi) {
    for (int ni = 0; ni < 2; ++ni) {
      for (int i = 0; i < 4; ++i) {
        const FragCoord c = mma_m16n8k8_c(lane, i);
        const int64_t m = m0 + warp_m + mi * kMmaM + c.row, n = n0 + warp_n + ni * kMmaN + c.col;
        if (m < s.m && n < s.n) store(m, n, split, acc[mi][ni][i]);
      }
    }
  }
  static_assert(sizeof(uint32_t) * kTileM * kWords >= sizeof(double) * kTileScratchDoubles, "scratch fits in a_tile");
  finish_tile(store, s, m0, n0, a_tile);
}

// run_tiled_gemm (tiled_gemm.h) in the arithmetic `math` selects: f32 runs the CUDA-core kernel
// unchanged, tf32 and bf16 the tensor-core kernel above. Same contract: every element of every
// slice is stored.
template <class LoadA, class LoadB, class Store>
void run_gemm(const LaunchSite& site, ConvMath math, const GemmShape& s, const LoadA& load_a, const LoadB& load_b,
              const Store& store) {
  if (math == ConvMath::f32) {
    run_tiled_gemm(site, s, load_a, load_b, store);
    return;
  }
  const dim3 grid = gemm_grid(site, s);
  if (math == ConvMath::tf32) {
    launch(site, &tiled_gemm_tc_kernel<Tf32Math, LoadA, LoadB, Store>, grid, dim3(kThreads), 0, Stream{}, s, load_a,
           load_b, store);
  } else {
    launch(site, &tiled_gemm_tc_kernel<Bf16Math, LoadA, LoadB, Store>, grid, dim3(kThreads), 0, Stream{}, s, load_a,
           load_b, store);
  }
}

}  // namespace ae::cuda::gemm

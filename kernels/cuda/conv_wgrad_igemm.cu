// Convolution backward-weight as a pipelined implicit GEMM on tensor cores (tf32 / bf16 mma.sync),
// NHWC activations, OHWI weights: the second stage layout of the pipeline of conv_implicit_gemm.cu
// (read its top comment first; the ring, the tilings and the mma sweep are shared through
// conv_igemm_pipeline.h).
//
//   dw[o, j] = sum_r A[o, r] * B[j, r],  r = (n, oh, ow) < N*OH*OW,  j = (kh, kw, c) < J = KH*KW*C
//   A[o, r] = dy[r, o];  B[j, r] = x[n, oh*sh - ph + kh, ow*sw - pw + kw, c], 0 in the padding.
//
// Both operands are contiguous along the GEMM rows (o in dy, c in x), not along k = r, so a stage
// holds kTileK = 32 k-rows (32 consecutive r) of kBlockM floats of A and 32 of kBlockN floats of B,
// stored [k][row]: one stage row is one r, and a 16-byte cp.async moves 4 consecutive o of one dy
// pixel, or 4 consecutive c (of one tap, as C % 4 == 0) of one x pixel. Thread t always copies the
// same column chunk (4 rows o / j) at k-rows t / (kBlockM / 4) + p i, p = kThreads / (kBlockM / 4)
// (8 with 64x64 tiles, 4 with 128x128): the column's (kh, kw, c) is decomposed once at kernel
// start, and each of the thread's 32 / p k-rows (4 or 8) keeps its r = (img, oh, ow) in
// registers, advanced by 32 per tile with a mixed-radix addition (32 = step_img*OH*OW +
// step_oh*OW + step_ow, precomputed on the host) instead of divisions. Without C % 4 (the C = 3
// stem, odd C) or a 16-byte aligned x, B takes four 4-byte copies per chunk, element j+e with its
// own (kh, kw, c); likewise A without O % 4 or an aligned dy (each operand chooses on its own).
//
// Swizzle. Stage row k (kBlockM / 4 >= 16 chunks of 16 bytes) stores logical chunk q at physical
// chunk q ^ s(k), s(k) = 2 * ((k & 3) ^ ((k >> 2) & 1)) (flips bits 1..2 of q only, so the XOR
// stays inside each aligned group of 8 chunks = 32 banks):
//   - copies: the 8 threads of a quarter warp write 8 consecutive chunks of one row, permuted
//     within their group of 8: conflict-free (the 4-byte copies of element e hit word e of 32
//     chunks, i.e. 8 banks: 4-way);
//   - fragments, read as single 4-byte words without ldmatrix (ldmatrix hands out rows of 16
//     contiguous bytes, which here run along o / j, not along k): a tf32 register of a lane is
//     (row base + g, k k0 + tig (+4)), base a multiple of 8, so the 32 lanes touch chunks
//     base/4 + {0, 1} in 4 rows k with k & 3 = 0..3: s(k) takes the 4 values {0, 2, 4, 6}, and
//     the 8 (chunk, k) pairs land on 8 different chunks mod 8: all 32 banks, conflict-free. A bf16
//     register packs (k, k + 1) with k = k0 + 2 tig (+8): two 4-byte reads, at k & 7 = 0, 2, 4, 6
//     (s = 0, 4, 2, 6) or 1, 3, 5, 7 (s = 2, 6, 0, 4): again four different s, conflict-free.
//
// Split-K: grid.z = slices; slice s covers r in [s * k_per_split, min(R, (s + 1) * k_per_split))
// with k_per_split a multiple of 64, the slices and their sum (conv_backward.cu's sum_slices_kernel)
// exactly those of the generic launch. Each slice runs 2 * ceil(len / 64) tiles of 32 rows, the
// rows past its end zero-filled.
//
// Bit-exactness with the generic tensor-core kernel (tiled_gemm_tc.h with DyTransposed /
// InputUnderTap), as for the forward (conv_implicit_gemm.cu): per output and slice, both run
// acc = 0; acc = mma(A_s, B_s, acc) over the k-steps of [k_begin, k_begin + round_up(len, 64)) in
// increasing order, 8 (tf32) or 16 (bf16) k per mma, zero steps kept; the registers hold
// to_tf32(v) / pack_bf16x2(v0, v1) of the same values v (dy, x or 0), rounded there at staging and
// here at fragment read. tests/gpu/test_cuda_conv_wgrad_pipelined asserts it on the emulated device.
// Nothing here has been timed on a GPU.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cuda/conv_igemm_pipeline.h"
#include "kernels/cuda/conv_implicit_gemm.h"

namespace ae::cuda {
namespace igemm {
namespace {

struct WgradArgs {
  const float* __restrict__ dy;  // [R, O]
  const float* __restrict__ x;   // [N, H, W, C]
  float* __restrict__ out;       // slice s: out[s * slice_elements + o * J + j]
  int o, j;                      // GEMM rows (O) and columns (J = KH*KW*C)
  int rows;                      // reduction length R = N*OH*OW
  int k_per_split;               // rows per slice, a multiple of 64
  int64_t slice_elements;        // O * J
  int h, w, c, kw, oh, ow, sh, sw, ph, pw;
  int64_t x_img;                        // H*W*C
  int step_img, step_oh, step_ow;       // 32 rows as (img, oh, ow), step_oh < OH, step_ow < OW
  bool pairs;                           // J even and out 8-byte aligned: float2 stores
};

// Float index of logical 16-byte chunk `chunk` of stage row (k-row) `k`, kWidth floats a row.
template <int kWidth>
__device__ __forceinline__ int kswizzle(int k, int chunk) {
  static_assert(kWidth % 32 == 0, "rows of whole groups of 8 chunks");
  return k * kWidth + ((chunk ^ (2 * ((k & 3) ^ ((k >> 2) & 1)))) << 2);
}

// Float index of element (k, row) in a stage of kWidth-float k-rows.
template <int kWidth>
__device__ __forceinline__ int kelement(int k, int row) {
  return kswizzle<kWidth>(k, row >> 2) + (row & 3);
}

// Where a lane's fragment words sit in a stage, as 4 per-thread bases plus compile-time offsets
// (so that the unrolled k-steps address shared memory by immediates instead of holding dozens of
// swizzled addresses in registers). A register's k is k0 + kl + d: k0 a multiple of 8 (tf32) / 16
// (bf16), which leaves s(k) unchanged; kl = tig (tf32) or 2 tig (bf16); d = 4 h (tf32), 8 h (bf16),
// + 1 for the second of a bf16 pair. Its row is warp_row + g + 8 x + 32 z (warp_row a multiple of
// 32, x < 4), whose chunk warp_row / 4 + 8 z + 2 x + (g >> 2) has x in bits 1..2, the bits s(k)
// flips; so with base[x] = kelement(kl, warp_row + g + 8 x),
//   kelement(kl + d, warp_row + g + 8 x + 32 z) = base[x ^ (s(kl + d) ^ s(kl)) / 2] + d W + 32 z.
// (s(kl + d) ^ s(kl)) / 2 is h for tf32 (s / 2 = tig ^ h), 0 for a bf16 pair's first k and 1 for
// its second (2 tig + 1 flips bit 0 of k & 3).
template <class Math, int kWidth>
__device__ __forceinline__ void fragment_bases(int warp_row, int (&base)[4]) {
  static_assert(kWidth % 32 == 0, "whole groups of 8 chunks");
  const int lane = static_cast<int>(threadIdx.x) % kWarp, g = lane >> 2, tig = lane & 3;
  const int kl = Math::kElemsPerWord == 1 ? tig : 2 * tig;
  AE_IGEMM_UNROLL
  for (int x = 0; x < 4; ++x) base[x] = kelement<kWidth>(kl, warp_row + g + 8 * x);
}

// The A and B fragments of one mma k-step (stage rows [k0, k0 + Math::kStepK)), read as words at
// the bases of fragment_bases (a_base for A's warp rows, b_base for B's, both within their stage).
template <class Math, class T>
__device__ __forceinline__ void load_fragments_k_major(const float* as, const float* bs, const int (&a_base)[4],
                                                       const int (&b_base)[4], int k0,
                                                       uint32_t (&a)[T::kMmaTilesM][4],
                                                       uint32_t (&b)[T::kMmaTilesN][2]) {
  constexpr int kWa = T::kBlockM, kWb = T::kBlockN;
  static_assert(T::kWarpTileM % 32 == 0 && T::kWarpTileN % 32 == 0, "warp rows at multiples of 32");
  const float* const ak = as + k0 * kWa;
  const float* const bk = bs + k0 * kWb;
  if constexpr (Math::kElemsPerWord == 1) {
    // tf32: A register q at (row g + 8 (q & 1), k tig + 4 (q >> 1)); B register q at (k tig + 4 q, col g).
    AE_IGEMM_UNROLL
    for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
      AE_IGEMM_UNROLL
      for (int q = 0; q < 4; ++q) {
        const int x = 2 * (mi & 1) + (q & 1), h = q >> 1;  // row warp_m + g + 8 x + 32 (mi >> 1)
        a[mi][q] = to_tf32(load_word(ak + a_base[x ^ h] + 4 * h * kWa + 32 * (mi >> 1)));
      }
    }
    AE_IGEMM_UNROLL
    for (int ni = 0; ni < T::kMmaTilesN; ++ni) {
      AE_IGEMM_UNROLL
      for (int q = 0; q < 2; ++q) {
        b[ni][q] = to_tf32(load_word(bk + b_base[(ni & 3) ^ q] + 4 * q * kWb + 32 * (ni >> 2)));
      }
    }
  } else {
    // bf16: register q of A holds k (2 tig, 2 tig + 1) + 8 (q >> 1) of row g + 8 (q & 1); register
    // q of B holds k (2 tig, 2 tig + 1) + 8 q of column g (mma.h).
    AE_IGEMM_UNROLL
    for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
      AE_IGEMM_UNROLL
      for (int q = 0; q < 4; ++q) {
        const int x = 2 * (mi & 1) + (q & 1), at = 8 * (q >> 1) * kWa + 32 * (mi >> 1);
        a[mi][q] = pack_bf16x2(load_word(ak + a_base[x] + at), load_word(ak + a_base[x ^ 1] + at + kWa));
      }
    }
    AE_IGEMM_UNROLL
    for (int ni = 0; ni < T::kMmaTilesN; ++ni) {
      AE_IGEMM_UNROLL
      for (int q = 0; q < 2; ++q) {
        const int x = ni & 3, at = 8 * q * kWb + 32 * (ni >> 2);
        b[ni][q] = pack_bf16x2(load_word(bk + b_base[x] + at), load_word(bk + b_base[x ^ 1] + at + kWb));
      }
    }
  }
}

template <class Math, class T, bool kWideA, bool kWideB>
__global__ __launch_bounds__(T::kThreads) void conv_wgrad_igemm_kernel(WgradArgs p) {
  // [kStages][A: kTileK k-rows of kBlockM | B: kTileK k-rows of kBlockN]
  float* const smem = dynamic_shared<float>();
  static_assert(T::kBlockM == T::kBlockN, "A and B share the thread -> (chunk, k-row) map");
  constexpr int kChunks = T::kBlockM / 4;                // 16-byte chunks per stage row
  constexpr int kKRowsPerPass = T::kThreads / kChunks;   // 8 (64x64 tiles) or 4 (128x128)
  constexpr int kLoads = kTileK / kKRowsPerPass;         // k-rows per thread and tile
  static_assert(T::kThreads % kChunks == 0 && kTileK % kKRowsPerPass == 0, "whole copy passes");
  const int tid = static_cast<int>(threadIdx.x), warp = tid / kWarp;
  const int m0 = static_cast<int>(blockIdx.x) * T::kBlockM, n0 = static_cast<int>(blockIdx.y) * T::kBlockN;
  const int k_begin = static_cast<int>(blockIdx.z) * p.k_per_split;
  const int k_end = p.rows - k_begin < p.k_per_split ? p.rows : k_begin + p.k_per_split;
  const int k_tiles = k_tiles_of(k_end - k_begin);

  // ---- per-thread tables ---------------------------------------------------------------------
  const int chunk = tid % kChunks, krow_first = tid / kChunks;
  // This thread's k-rows r = (img, oh, ow), advanced by 32 per tile.
  int r[kLoads], r_oh[kLoads], r_ow[kLoads];
  int64_t r_img[kLoads];  // img * H*W*C
  const int pixels = p.oh * p.ow;
  AE_IGEMM_UNROLL
  for (int i = 0; i < kLoads; ++i) {
    r[i] = k_begin + krow_first + i * kKRowsPerPass;
    const int pix = r[i] % pixels;
    r_img[i] = static_cast<int64_t>(r[i] / pixels) * p.x_img;
    r_oh[i] = pix / p.ow;
    r_ow[i] = pix % p.ow;
  }
  // The swizzle of a k-row depends on k % 8 alone, and this thread's k-rows krow_first + p i
  // (p = kKRowsPerPass) take 8 / p values of it (p = 4) or one (p = 8): the swizzled chunk offsets
  // are computed once, as for the forward's copies (conv_implicit_gemm.cu, "Swizzle").
  static_assert(kKRowsPerPass % 8 == 0 || 8 % kKRowsPerPass == 0, "k % 8 repeats over a thread's k-rows");
  constexpr int kSwizzlePeriod = kKRowsPerPass >= 8 ? 1 : 8 / kKRowsPerPass;
  int a_chunk_at[kSwizzlePeriod], b_chunk_at[kSwizzlePeriod];  // kswizzle(krow, chunk) - krow * width
  AE_IGEMM_UNROLL
  for (int i = 0; i < kSwizzlePeriod; ++i) {
    const int krow = krow_first + i * kKRowsPerPass;
    a_chunk_at[i] = kswizzle<T::kBlockM>(krow, chunk) - krow * T::kBlockM;
    b_chunk_at[i] = kswizzle<T::kBlockN>(krow, chunk) - krow * T::kBlockN;
  }
  // A: this thread's o = m0 + 4 chunk (+ e). B: its j = n0 + 4 chunk (+ e) as (c, kh - ph, kw - pw).
  const int a_o = m0 + 4 * chunk;
  constexpr int kPartsB = kWideB ? 1 : 4;
  int b_c[kPartsB], b_dh[kPartsB], b_dw[kPartsB];
  bool b_ok[kPartsB];
  AE_IGEMM_UNROLL
  for (int e = 0; e < kPartsB; ++e) {
    const int j = n0 + 4 * chunk + e;
    b_ok[e] = j < p.j;
    const int jj = b_ok[e] ? j : 0, tap = jj / p.c;
    b_c[e] = jj % p.c;
    b_dh[e] = tap / p.kw - p.ph;
    b_dw[e] = tap % p.kw - p.pw;
  }

  const auto issue_tile = [&](int stage) {
    float* as = smem + stage * T::kStageFloats;
    float* bs = as + kTileK * T::kBlockM;
    AE_IGEMM_UNROLL
    for (int i = 0; i < kLoads; ++i) {
      const int krow = krow_first + i * kKRowsPerPass;
      float* const a_dst = as + krow * T::kBlockM + a_chunk_at[i % kSwizzlePeriod];
      float* const b_dst = bs + krow * T::kBlockN + b_chunk_at[i % kSwizzlePeriod];
      const bool r_ok = r[i] < k_end;
      // A: dy[r, o .. o + 3]
      const float* dy_row = p.dy + static_cast<int64_t>(r[i]) * p.o;
      if constexpr (kWideA) {
        const bool ok = r_ok && a_o < p.o;  // O % 4 == 0: the chunk is all in or all out
        cp_async_cg_16(a_dst, ok ? dy_row + a_o : p.dy, ok ? 16 : 0);
      } else {
        AE_IGEMM_UNROLL
        for (int e = 0; e < 4; ++e) {
          const bool ok = r_ok && a_o + e < p.o;
          cp_async_ca<4>(a_dst + e, ok ? dy_row + a_o + e : p.dy, ok ? 4 : 0);
        }
      }
      // B: x under tap (kh, kw) of output pixel r, channels c .. c + 3 (or one element each)
      AE_IGEMM_UNROLL
      for (int e = 0; e < kPartsB; ++e) {
        const int ih = r_oh[i] * p.sh + b_dh[e], iw = r_ow[i] * p.sw + b_dw[e];
        const bool ok = r_ok && b_ok[e] && ih >= 0 && ih < p.h && iw >= 0 && iw < p.w;
        const float* src = ok ? p.x + r_img[i] + (static_cast<int64_t>(ih) * p.w + iw) * p.c + b_c[e] : p.x;
        if constexpr (kWideB) {
          cp_async_cg_16(b_dst, src, ok ? 16 : 0);
        } else {
          cp_async_ca<4>(b_dst + e, src, ok ? 4 : 0);
        }
      }
      // r += 32, as a mixed-radix addition
      r[i] += kTileK;
      r_ow[i] += p.step_ow;
      r_oh[i] += p.step_oh;
      int img_step = p.step_img;
      if (r_ow[i] >= p.ow) {
        r_ow[i] -= p.ow;
        ++r_oh[i];
      }
      if (r_oh[i] >= p.oh) {
        r_oh[i] -= p.oh;
        ++img_step;
      }
      r_img[i] += img_step * p.x_img;
    }
  };

  // ---- the pipeline (conv_implicit_gemm.cu) --------------------------------------------------
  const int warp_m = (warp % (T::kBlockM / T::kWarpTileM)) * T::kWarpTileM;
  const int warp_n = (warp / (T::kBlockM / T::kWarpTileM)) * T::kWarpTileN;
  int a_base[4], b_base[4];
  fragment_bases<Math, T::kBlockM>(warp_m, a_base);
  fragment_bases<Math, T::kBlockN>(warp_n, b_base);
  float acc[T::kMmaTilesM][T::kMmaTilesN][4] = {};
  run_pipeline(k_tiles, issue_tile, [&](int stage) {
    const float* as = smem + stage * T::kStageFloats;
    const float* bs = as + kTileK * T::kBlockM;
    AE_IGEMM_UNROLL
    for (int k0 = 0; k0 < kTileK; k0 += Math::kStepK) {
      uint32_t a[T::kMmaTilesM][4], b[T::kMmaTilesN][2];
      load_fragments_k_major<Math, T>(as, bs, a_base, b_base, k0, a, b);
      mma_warp_tile<Math, T>(acc, a, b);
    }
  });

  // ---- epilogue: C fragment (g, 2 tig + {0, 1}) and (g + 8, ...) of each mma tile ------------
  const int lane = tid % kWarp, g = lane >> 2, tig = lane & 3;
  float* const slice = p.out + static_cast<int64_t>(blockIdx.z) * p.slice_elements;
  AE_IGEMM_UNROLL
  for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
    AE_IGEMM_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int o = m0 + warp_m + 16 * mi + g + 8 * half;
      if (o >= p.o) continue;
      float* orow = slice + static_cast<int64_t>(o) * p.j;
      AE_IGEMM_UNROLL
      for (int ni = 0; ni < T::kMmaTilesN; ++ni) {
        const int j = n0 + warp_n + 8 * ni + 2 * tig;
        const float v0 = acc[mi][ni][2 * half], v1 = acc[mi][ni][2 * half + 1];
        if (p.pairs && j + 1 < p.j) {
          store_pair(orow + j, v0, v1);
        } else {
          if (j < p.j) orow[j] = v0;
          if (j + 1 < p.j) orow[j + 1] = v1;
        }
      }
    }
  }
}

std::atomic<int64_t> g_f32_tiled{0}, g_tc_tiled{0}, g_pipelined64{0}, g_pipelined128{0}, g_pipelined_narrow{0};
std::atomic<int64_t> g_stem_padded{0};
std::atomic<int> g_kernel{static_cast<int>(ConvBackwardWeightKernel::automatic)};

template <class Math, class T, bool kWideA>
void launch_wgrad(const LaunchSite& site, dim3 grid, const WgradArgs& args, bool wide_b) {
  if (wide_b) {
    launch(site, &conv_wgrad_igemm_kernel<Math, T, kWideA, true>, grid, dim3(T::kThreads), T::kSharedBytes,
           Stream{}, args);
  } else {
    launch(site, &conv_wgrad_igemm_kernel<Math, T, kWideA, false>, grid, dim3(T::kThreads), T::kSharedBytes,
           Stream{}, args);
  }
}

template <class Math, class T>
void launch_wgrad(const LaunchSite& site, int64_t slices, const WgradArgs& args, bool wide_a, bool wide_b) {
  const dim3 grid(static_cast<unsigned>((args.o + T::kBlockM - 1) / T::kBlockM),
                  static_cast<unsigned>((args.j + T::kBlockN - 1) / T::kBlockN), static_cast<unsigned>(slices));
  if (wide_a) {
    launch_wgrad<Math, T, true>(site, grid, args, wide_b);
  } else {
    launch_wgrad<Math, T, false>(site, grid, args, wide_b);
  }
}

}  // namespace
}  // namespace igemm

ConvBackwardWeightKernel conv_backward_weight_kernel() {
  return static_cast<ConvBackwardWeightKernel>(igemm::g_kernel.load());
}
void set_conv_backward_weight_kernel(ConvBackwardWeightKernel kernel) { igemm::g_kernel.store(static_cast<int>(kernel)); }

ConvBackwardWeightLaunches conv_backward_weight_launches() {
  ConvBackwardWeightLaunches l;
  l.f32_tiled = igemm::g_f32_tiled.load();
  l.tc_tiled = igemm::g_tc_tiled.load();
  l.pipelined_64x64 = igemm::g_pipelined64.load();
  l.pipelined_128x128 = igemm::g_pipelined128.load();
  l.pipelined_4byte = igemm::g_pipelined_narrow.load();
  l.stem_padded = igemm::g_stem_padded.load();
  return l;
}
void note_conv_backward_weight_stem_padded() { ++igemm::g_stem_padded; }
void note_conv_backward_weight_f32_tiled() { ++igemm::g_f32_tiled; }
void note_conv_backward_weight_tc_tiled() { ++igemm::g_tc_tiled; }

bool conv_backward_weight_pipelined_supported(const ConvGeometry& g, const float* x, const float* dy) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  const int64_t j = g.kh * g.kw * g.c;
  return igemm::aligned(x, 4) && igemm::aligned(dy, 4) && g.m() > 0 && g.o > 0 && j > 0 && (j + 63) / 64 <= 65535 &&
         g.m() < kLimit && g.o < kLimit && j < kLimit && g.h < kLimit && g.w < kLimit && g.oh < kLimit &&
         g.ow < kLimit && g.sh < kLimit && g.sw < kLimit && g.ph < kLimit && g.pw < kLimit;
}

bool conv_backward_weight_pipelined_wide_dy(const ConvGeometry& g, const float* dy) {
  return g.o % 4 == 0 && igemm::aligned(dy, 16);
}

bool conv_backward_weight_pipelined_wide_x(const ConvGeometry& g, const float* x) {
  return g.c % 4 == 0 && igemm::aligned(x, 16);
}

bool conv_backward_weight_pipelined(const LaunchSite& site, ConvMath math, const ConvGeometry& g, const float* x,
                                    const float* dy, float* out, int64_t k_per_split, int64_t slices) {
  const ConvBackwardWeightKernel choice = conv_backward_weight_kernel();
  if (math == ConvMath::f32 || choice == ConvBackwardWeightKernel::tiled ||
      !conv_backward_weight_pipelined_supported(g, x, dy) || k_per_split <= 0 || k_per_split % 64 != 0 ||
      slices < 1 || slices > 65535 || (slices - 1) * k_per_split >= g.m()) {
    return false;
  }
  igemm::WgradArgs a{};
  a.dy = dy, a.x = x, a.out = out;
  a.o = static_cast<int>(g.o), a.j = static_cast<int>(g.kh * g.kw * g.c), a.rows = static_cast<int>(g.m());
  a.k_per_split = static_cast<int>(std::min<int64_t>(k_per_split, int64_t{1} << 30));  // >= rows: one slice
  a.slice_elements = g.o * g.kh * g.kw * g.c;
  a.h = static_cast<int>(g.h), a.w = static_cast<int>(g.w), a.c = static_cast<int>(g.c);
  a.kw = static_cast<int>(g.kw), a.oh = static_cast<int>(g.oh), a.ow = static_cast<int>(g.ow);
  a.sh = static_cast<int>(g.sh), a.sw = static_cast<int>(g.sw), a.ph = static_cast<int>(g.ph);
  a.pw = static_cast<int>(g.pw);
  a.x_img = g.h * g.w * g.c;
  const int64_t pixels = g.oh * g.ow;
  a.step_img = static_cast<int>(igemm::kTileK / pixels);
  a.step_oh = static_cast<int>(igemm::kTileK % pixels / g.ow);
  a.step_ow = static_cast<int>(igemm::kTileK % pixels % g.ow);
  a.pairs = a.j % 2 == 0 && igemm::aligned(out, 8);
  const bool wide_a = conv_backward_weight_pipelined_wide_dy(g, dy), wide_b = conv_backward_weight_pipelined_wide_x(g, x);
  if (!wide_a || !wide_b) ++igemm::g_pipelined_narrow;
  bool large = choice == ConvBackwardWeightKernel::pipelined_128x128;
  if (choice == ConvBackwardWeightKernel::automatic) large = igemm::large_tiles_pay(a.o, a.j, slices);
  ++(large ? igemm::g_pipelined128 : igemm::g_pipelined64);
  if (large) {
    if (math == ConvMath::tf32) {
      igemm::launch_wgrad<gemm::Tf32Math, igemm::Tiles128>(site, slices, a, wide_a, wide_b);
    } else {
      igemm::launch_wgrad<gemm::Bf16Math, igemm::Tiles128>(site, slices, a, wide_a, wide_b);
    }
  } else {
    if (math == ConvMath::tf32) {
      igemm::launch_wgrad<gemm::Tf32Math, igemm::Tiles64>(site, slices, a, wide_a, wide_b);
    } else {
      igemm::launch_wgrad<gemm::Bf16Math, igemm::Tiles64>(site, slices, a, wide_a, wide_b);
    }
  }
  return true;
}

}  // namespace ae::cuda

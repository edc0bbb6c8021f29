// Convolution as a pipelined implicit GEMM on tensor cores (tf32 / bf16 mma.sync), NHWC. One kernel
// (conv_igemm_kernel) serves two problems, which differ only in the gather description (Args):
//
//   forward          y[m, o] = sum_k A[m, k] * W[o, k],  m = (n, oh, ow), k = (kh, kw, c)
//                    A = x under tap (kh, kw) of output pixel (oh, ow); W = w as an [O, K] matrix.
//   backward-data    dx[m, c] = sum_k A[m, k] * B[c, k]  per stride phase (rh, rw) (conv_backward.cu),
//                    m = (n, i, j) = input pixel (rh + sh*i, rw + sw*j), k = (th, tw, o) over the
//                    phase's taps kh = kh0 + sh*th, kw = kw0 + sw*tw; A = dy[n, qh + i - th,
//                    qw + j - tw, o] (qh = (rh + ph - kh0) / sh), i.e. a stride-1 forward on dy whose
//                    taps walk backwards; B[c, k] = w_t[kh, kw, c, o], the weight transposed to
//                    [KH, KW, C, O] once per call so that k (o) is contiguous, as 16-byte copies need.
//
// Backward-weight (dw[o, j] = sum_r dy[r, o] * X[r, j], r = (n, oh, ow)) runs a second kernel on this
// pipeline, conv_wgrad_igemm.cu: both its operands are contiguous along the GEMM rows (o in dy, c in
// x), not along k = r, so its stages are laid out [k][row] (16-byte chunks of 4 rows, another
// swizzle, fragments read as words without ldmatrix) and it splits K over grid.z. The ring
// (run_pipeline), the tilings and the mma sweep are shared through conv_igemm_pipeline.h.
//
// Both are the same GEMM as the generic tensor-core path (tiled_gemm_tc.h with conv.cu's InputPatch,
// or conv_backward.cu's DyThroughTap / WeightByTapThenOut loaders), with the same k order, made
// faster (conditions in conv_implicit_gemm.h: 16-byte copies when the gathered channel count (C
// forward, O backward-data) is % 4 and the operands are 16-byte aligned, 4-byte copies of single
// elements otherwise, e.g. the C = 3 stem).
// Nothing here has been timed on a GPU. Note that bench_cuda_conv (scripts/gpu-check.sh) calls
// conv2d_forward but sets conv math f32 (to match cuDNN's FMA math), so it does not time this
// kernel yet: a tf32 / bf16 row there (set_conv_math, and cuDNN tensor-op math) is what will.
//
// The gather, in general form (Args): GEMM row m = (img, i, j) over rows_h x rows_w; its pixel under
// tap (th, tw) of the source [*, h, wd, c] (x forward, dy backward-data) is
//   (i * step_h + off_h + tap_dir * th, j * step_w + off_w + tap_dir * tw)
// (forward: step = stride, off = -pad, tap_dir = +1; backward-data: step 1, off = q, tap_dir = -1),
// zero outside the source; k = (th, tw, cc) with cc the source channel. B[n, k] sits at
//   b_row * n + b_off + th * b_tap_h + tw * b_tap_w + cc
// (forward: b_row = K, b_off = 0, b_tap_h = KW*C, b_tap_w = C, i.e. n*K + k), and out[m, n] at
//   out_off + img * out_img + i * out_row + j * out_col + n.
//
// What changes against the generic kernel:
//  1. No per-element division. Each thread loads the same rows of A (and of B) in every K tile (4
//     with 64x64 tiles, 8 with 128x128), so it computes each row's image base offset and (ih0, iw0)
//     = (i*step_h + off_h, ...) once, in registers, at kernel start; and each thread always loads
//     the same 16-byte column chunk of a K tile, so its (th, tw, c) is decomposed once and then
//     advanced by 32 per tile with additions (c += 32; carry into tw, then th), B's offset of k
//     along with it.
//  2. 16-byte cp.async copies (4 channels of one pixel; 4 k of one weight row) straight from
//     global to shared memory, the padding and the ragged edges of the tile zero-filled by the
//     copy itself (src-size 0), into a 3-stage ring of shared tiles. When c % 4 != 0 (or a tensor
//     is not 16-byte aligned) the "4-byte" variant issues four 4-byte cp.async per 16-byte chunk,
//     element k+e with its own (th, tw, c) advanced the same way; everything else is shared.
//  3. Raw float32 words in shared memory: rounding to tf32 / bf16 happens when fragments are read.
//  4. XOR-swizzled tiles and ldmatrix for the tf32 fragments (see "Swizzle").
//  5. Larger block tiles: 128x128 (4 warps of 64x64) when the grid is large, 64x64 (4 warps of
//     32x32) otherwise (conv_igemm_pipeline.h).
//
// Split-K (forward only). When the output has few block tiles and K is long (ResNet layer4: 7x7
// outputs, K = 4608), grid.z = slices and slice z runs k in [z * k_per_split, min(K, (z + 1) *
// k_per_split)), k_per_split a multiple of 64 (conv_forward_split_plan), as 2 * ceil(len / 64)
// tiles: every slice but the last is whole 64-wide steps, and the last one's steps past K are the
// zero steps of the unsplit kernel. Each thread's (th, tw, c) starts from k_begin + its chunk's k;
// the rest of the kernel is unchanged, and the slice stores to out + z * M*O (a workspace) for
// conv.cu to sum in slice order (sum_conv_slices: double, rounded once). So each slice's partial is
// bitwise the unsplit kernel's accumulation over that k range (same registers, same steps, started
// from acc = 0), but the total is not bitwise the unsplit kernel's: the k-steps are no longer
// accumulated in one chain. Backward-data always runs one slice (k_per_split >= K).
//
// bf16 storage (forward only; conv_forward_pipelined_bf16, Elem = uint16_t). When x and w are bf16
// tensors a 16-byte chunk holds 8 k instead of 4, so a stage row (still 128 bytes, same swizzle)
// holds 64 k and a K tile is one whole generic 64-wide slice: ceil(k_len / 64) tiles. Only wide
// copies (C % 8 == 0: a chunk never straddles a tap). The staged bf16 pairs are already mma
// registers: ldmatrix.x4 gives an A fragment as for tf32 (matrix j at rows + 8 (j & 1), k + 8 (j >>
// 1)), and B fragments of two n8 tiles (matrix j at n + 8 (j >> 1), k + 8 (j & 1)); nothing is
// rounded, and the swizzle argument for ldmatrix holds unchanged (no bank conflicts). The same
// registers as the f32-storage bf16 kernel on the widened values (pack_bf16x2 of a bf16 value is
// itself), in the same k-steps: the same bits (tests/gpu/test_cuda_conv_bf16_storage).
//
// Pipeline (kStages = 3, K tiles of kTileK = 32 floats; run_pipeline in conv_igemm_pipeline.h, shared
// with backward-weight):
//   prologue: issue tiles 0 and 1, each followed by commit_group (always commit, even an empty
//             group when there are fewer tiles, so that group counting is the same in every case).
//   iteration kt:
//     wait_group<kStages - 2 = 1>: of this thread's groups only the newest (tile kt+1) may still be
//             pending, so its copies of tile kt have landed;
//     __syncthreads(): (a) every thread's copies of tile kt are visible to every warp, and (b) every
//             warp has finished the mma of iteration kt-1, which read stage (kt-1) % 3 — the stage
//             the next line overwrites. One barrier serves both, which is why it sits between the
//             wait and the next issue and not at the end of the iteration;
//     issue tile kt+2 into stage (kt+2) % 3 == (kt-1) % 3, commit (empty when kt+2 is past the end);
//     mma over stage kt % 3 while tiles kt+1 and kt+2 are in flight.
//   The groups still pending at exit are the empty ones of the last iterations (nothing to drain).
//
// Swizzle. A stage holds rows of 32 floats = 128 bytes = one pass over the 32 banks, as 8 chunks
// of 16 bytes; logical chunk j of row r is stored at physical chunk j ^ s(r), s(r) = the bits of
// r % 8 rotated left by one (r % 8 = 0..7 -> s = 0 2 4 6 1 3 5 7). s is a bijection of 0..7, so
//   - the 8 threads that copy one row's 8 chunks write 8 different chunks: conflict-free;
//   - an ldmatrix matrix is 8 consecutive rows (a multiple of 8 first) at one logical chunk: the
//     XOR spreads them over the 8 physical chunks, i.e. all 32 banks: conflict-free;
//   - bf16 fragments from an f32 stage are read as 8-byte pairs, a half-warp per phase: rows
//     g = 0..3 (or 4..7), each at logical chunks {b, b + 1} (b even), words 2 (tig & 1) + {0, 1}.
//     s(g) is 0 2 4 6 (or 1 3 5 7): four different even offsets (or, for 4..7, odd ones, which
//     swap b and b + 1), so the four rows' chunk pairs are disjoint and the 16 lanes cover all 32
//     banks once: conflict-free. With the plain s(r) = r % 8 rows 0 and 1 (2 and 3) shared a pair,
//     a 2-way conflict on every such read (bench/RESULTS.md, "bf16 storage in the conv forward").
// Every row a lane addresses in a fragment read, and every row a thread copies, has the same r % 8
// (warp tiles, 16-row mma tiles and copy passes are multiples of 8 rows), so each computes its
// mask once (swizzle_mask) and the chunk XOR folds into a few per-lane offsets. ptxas (sm_90):
// computed per access, the rotation cost registers (f32-stage bf16, 64x64 4-byte 128 -> 160;
// 128x128 spilled 12 and 108 bytes); with the masks it costs none, and the 64x64 wide kernels
// fell from 126-128 to 96 registers (bench/RESULTS.md, "conflict-free bf16 fragment reads").
//
// tf32 fragments via ldmatrix: an ldmatrix matrix row is 16 bytes = 4 f32 words, and lane l gets
// word l % 4 of row l / 4, i.e. (row g, word tig): exactly the m16n8k8 tf32 A register a0 for the
// matrix at (rows 0..7, words 0..3), a1 for rows 8..15, a2 / a3 for words 4..7; and B registers b0 /
// b1 for a tile stored [n][k] at words 0..3 / 4..7. So ldmatrix.x4 gives a whole A fragment, or
// the B fragments of two n8 tiles; each word is then rounded with cvt.rna.tf32. bf16 cannot use it
// on raw f32 staging: a bf16 register packs the k-pair (2 tig, 2 tig + 1), two f32 words 8 bytes
// apart from lane to lane, while ldmatrix hands lane tig one 4-byte word at stride 4 bytes; it is
// read as one 8-byte shared load and packed with cvt.rn.bf16x2 instead.
//
// Bit-exactness with the generic tensor-core kernel (unsplit: one slice). Both compute each output as
//   acc = 0; for each mma k-step s = 0, 1, ... over [0, round_up(K, 64)): acc = mma(A_s, B_s, acc)
// with the same instruction (mma_m16n8k8_tf32 / mma_m16n8k16_bf16) on the same operand registers:
//   - the generic kernel stages to_tf32(v) / pack_bf16x2(v0, v1) of v = A or B or 0 (padding, rows
//     past M or N, k past K); this one stages v or 0 raw (the zero-fill) and applies the same
//     to_tf32 / pack_bf16x2 at fragment read, and rounding 0 gives 0: the registers are equal;
//   - the k-steps: the generic kernel covers [0, round_up(K, 64)) in 64-wide slices of 8 (tf32) or
//     16 (bf16) k per mma; this one covers the same range (its tile count is rounded up to an even
//     number of 32-wide tiles) with the same 8 / 16 k per mma, in increasing order. The all-zero
//     steps past K are kept, not skipped: acc + 0 is acc except that it turns a -0 into +0, so
//     skipping them could change the sign of an exactly-zero output.
// mma results depend only on the operands (and on the emulated device the mma sums in double and
// rounds once), so equal registers in equal order give equal bits: tests/gpu/test_cuda_conv_pipelined
// (forward) and test_cuda_conv_backward_pipelined (backward-data, every stride phase) assert bitwise
// equality with the generic kernel on the emulated device. Backward-data's k order (th, tw, o),
// o fastest, and its single K slice are those of conv_backward.cu's generic launch, and its B values
// are w's own (the transpose moves them, it does not round them).
#include "kernels/cuda/conv_implicit_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cuda/channel_tile_stats.h"
#include "kernels/cuda/conv_igemm_pipeline.h"
#include "kernels/cuda/conv_stats.h"
#include "runtime/error.h"

namespace ae::cuda {
namespace igemm {

// One implicit GEMM out[m, n] = sum_k A[m, k] * B[n, k] (the general form at the top of the file),
// its operands float32 (Elem = float) or bfloat16 bits (Elem = uint16_t; forward only, see
// "bf16 storage").
template <class Elem>
struct ArgsOf {
  const Elem* __restrict__ a;  // gathered source [*, h, wd, c] (x forward, dy backward-data)
  const Elem* __restrict__ b;  // B rows (w forward, w_t backward-data)
  float* __restrict__ out;      // y forward, dx backward-data
  int64_t m, k;                 // GEMM rows and reduction length, k = (th, tw, cc)
  int n;                        // GEMM columns (O forward, C backward-data)
  int64_t a_img;                // h * wd * c: one image of the source
  int h, wd, c;                 // source extents; c is also the innermost part of k
  int taps_h, taps_w, tap_dir;  // k = (th, tw, cc), th < taps_h, tw < taps_w; tap_dir = +1 or -1
  int rows_h, rows_w;           // GEMM row m = (img, i, j), i < rows_h, j < rows_w
  int step_h, step_w, off_h, off_w;       // source pixel of tap (0, 0) of row (i, j)
  int64_t b_row, b_off, b_tap_h, b_tap_w;  // B[n, k] at b_row*n + b_off + th*b_tap_h + tw*b_tap_w + cc
  int64_t out_off, out_img, out_row, out_col;  // out[m, n] at out_off + img*out_img + i*out_row + j*out_col + n
  // Split-K (forward only; see "Split-K" at the top): slice z = blockIdx.z covers k in
  // [z * k_per_split, min(k, (z + 1) * k_per_split)) and stores to out + z * out_slice.
  // k_per_split is a multiple of 64, or >= k with one slice (backward-data: always).
  int64_t k_per_split;
  int64_t out_slice;
  // Forward, one slice, training BatchNorm after it: each block's output tile's per-channel
  // statistics (channel_tile_stats.h; out is then y [m, n]). nullptr otherwise.
  double* __restrict__ stats;
};
using Args = ArgsOf<float>;

// The XOR mask s(row) of a stage row: row % 8 with its 3 bits rotated left by one (see "Swizzle").
// Callers whose rows all share row % 8 (a lane's fragment rows, a thread's copy rows) compute it
// once.
__device__ __forceinline__ int swizzle_mask(int row) {
  const int r = row & 7;
  return ((r << 1) | (r >> 2)) & 7;
}

// Float index of logical 16-byte chunk `chunk` of row `row` in a stage, mask = swizzle_mask(row).
__device__ __forceinline__ int swizzle(int row, int chunk, int mask) { return row * kTileK + ((chunk ^ mask) << 2); }

// The A and B fragments of one mma k-step (k floats [k0, k0 + Math::kStepK) of the stage) for a
// warp tile at rows warp_m of A and warp_n of B.
// With kBf16Stage the stage holds bf16 elements (k0 counts them, 8 per chunk) and is already in
// the registers' format: ldmatrix as for tf32, and no rounding.
template <class Math, class T, bool kBf16Stage>
__device__ __forceinline__ void load_fragments(const float* as, const float* bs, int warp_m, int warp_n, int k0,
                                               uint32_t (&a)[T::kMmaTilesM][4], uint32_t (&b)[T::kMmaTilesN][2]) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  if constexpr (kBf16Stage) {
    // bf16 stage: matrix j of an A x4 is rows + 8 (j & 1), k + 8 (j >> 1), lane l gets the k-pair
    // (2 (l % 4), +1) of row l / 4: register q = j of m16n8k16 (mma.h). B: matrix j is n rows
    // + 8 (j >> 1), k + 8 (j & 1), i.e. b[ni][0], b[ni][1], b[ni + 1][0], b[ni + 1][1].
    const int j = lane >> 3, i = lane & 7, chunk0 = k0 / 8, mask = swizzle_mask(i);
    AE_IGEMM_UNROLL
    for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
      ldmatrix_m8n8_b16<4>(a[mi], as + swizzle(warp_m + 16 * mi + i + 8 * (j & 1), chunk0 + (j >> 1), mask));
    }
    AE_IGEMM_UNROLL
    for (int ni = 0; ni < T::kMmaTilesN; ni += 2) {
      uint32_t r[4];
      ldmatrix_m8n8_b16<4>(r, bs + swizzle(warp_n + 8 * ni + i + 8 * (j >> 1), chunk0 + (j & 1), mask));
      b[ni][0] = r[0];
      b[ni][1] = r[1];
      b[ni + 1][0] = r[2];
      b[ni + 1][1] = r[3];
    }
  } else if constexpr (Math::kElemsPerWord == 1) {
    // tf32: ldmatrix.x4, lane l addressing row l % 8 of matrix l / 8 (see the top of the file).
    const int j = lane >> 3, i = lane & 7, chunk0 = k0 / 4, mask = swizzle_mask(i);
    AE_IGEMM_UNROLL
    for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
      uint32_t r[4];
      ldmatrix_m8n8_b16<4>(r, as + swizzle(warp_m + 16 * mi + i + 8 * (j & 1), chunk0 + (j >> 1), mask));
      AE_IGEMM_UNROLL
      for (int q = 0; q < 4; ++q) a[mi][q] = to_tf32(__uint_as_float(r[q]));
    }
    AE_IGEMM_UNROLL
    for (int ni = 0; ni < T::kMmaTilesN; ni += 2) {
      uint32_t r[4];
      ldmatrix_m8n8_b16<4>(r, bs + swizzle(warp_n + 8 * ni + i + 8 * (j >> 1), chunk0 + (j & 1), mask));
      b[ni][0] = to_tf32(__uint_as_float(r[0]));
      b[ni][1] = to_tf32(__uint_as_float(r[1]));
      b[ni + 1][0] = to_tf32(__uint_as_float(r[2]));
      b[ni + 1][1] = to_tf32(__uint_as_float(r[3]));
    }
  } else {
    // bf16: register q of A holds k (2 tig, 2 tig + 1) + 8 (q >> 1) of row g + 8 (q & 1); register
    // q of B holds k (2 tig, 2 tig + 1) + 8 q of column g (mma.h).
    const int g = lane >> 2, tig = lane & 3, mask = swizzle_mask(g);
    AE_IGEMM_UNROLL
    for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
      AE_IGEMM_UNROLL
      for (int q = 0; q < 4; ++q) {
        const int row = warp_m + 16 * mi + g + 8 * (q & 1), f = k0 + 2 * tig + 8 * (q >> 1);
        float lo, hi;
        load_pair(as + swizzle(row, f >> 2, mask) + (f & 3), lo, hi);
        a[mi][q] = pack_bf16x2(lo, hi);
      }
    }
    AE_IGEMM_UNROLL
    for (int ni = 0; ni < T::kMmaTilesN; ++ni) {
      AE_IGEMM_UNROLL
      for (int q = 0; q < 2; ++q) {
        const int row = warp_n + 8 * ni + g, f = k0 + 2 * tig + 8 * q;
        float lo, hi;
        load_pair(bs + swizzle(row, f >> 2, mask) + (f & 3), lo, hi);
        b[ni][q] = pack_bf16x2(lo, hi);
      }
    }
  }
}

template <class Math, class T, bool kWide, class Elem = float>
__global__ __launch_bounds__(T::kThreads) void conv_igemm_kernel(ArgsOf<Elem> p) {
  // bf16 storage (see the top of the file): 16-byte copies of 8 bf16, 64 k per stage row.
  constexpr bool kBf16Stage = sizeof(Elem) == 2;
  static_assert(!kBf16Stage || (kWide && Math::kElemsPerWord == 2), "bf16 storage: 16-byte copies, bf16 mma");
  constexpr int kChunkElems = 16 / static_cast<int>(sizeof(Elem));  // k per 16-byte chunk
  constexpr int kStageK = kChunksPerRow * kChunkElems;               // k per stage row: 32 or 64
  float* const smem = dynamic_shared<float>();  // [kStages][A: kBlockM rows | B: kBlockN rows][128 bytes]
  const int tid = static_cast<int>(threadIdx.x), warp = tid / kWarp;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * T::kBlockM;
  const int n0 = static_cast<int>(blockIdx.y) * T::kBlockN;
  // This block's K slice: [k_begin, k_begin + k_len), run as 2 * ceil(k_len / 64) tiles of 32 (or
  // ceil(k_len / 64) of 64 in bf16; the k past the slice's end are past K: only the last slice is
  // ragged).
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * p.k_per_split;
  const int64_t k_len = p.k - k_begin < p.k_per_split ? p.k - k_begin : p.k_per_split;
  const int k_tiles = kBf16Stage ? k_tiles_of(k_len) / 2 : k_tiles_of(k_len);

  // ---- per-thread tables: the rows this thread copies, and its k position ------------------
  const int chunk = tid % kChunksPerRow, row_first = tid / kChunksPerRow;
  static_assert(T::kRowsPerPass % 8 == 0, "a thread's copy rows share row % 8, so one swizzle mask");
  const int copy_mask = swizzle_mask(row_first);
  int64_t a_base[T::kLoadsA];  // offset of the row's image in the source
  int a_ih0[T::kLoadsA], a_iw0[T::kLoadsA];
  AE_IGEMM_UNROLL
  for (int i = 0; i < T::kLoadsA; ++i) {
    const int64_t m = m0 + row_first + i * T::kRowsPerPass;
    if (m < p.m) {
      const int64_t col = m % p.rows_w, t = m / p.rows_w;
      const int64_t row = t % p.rows_h, img = t / p.rows_h;
      a_base[i] = img * p.a_img;
      a_ih0[i] = static_cast<int>(row) * p.step_h + p.off_h;
      a_iw0[i] = static_cast<int>(col) * p.step_w + p.off_w;
    } else {
      a_base[i] = 0;
      a_ih0[i] = -(1 << 30);  // every ih < 0 (either tap direction): the row is zero-filled
      a_iw0[i] = 0;
    }
  }
  // The k of this thread's copies in the next tile to issue, k = (th * taps_w + tw) * c + cc: one
  // 16-byte copy of k..k+3 (bf16: k..k+7) per row (kWide), or four 4-byte copies of k, k+1, k+2, k+3 per row, each
  // element with its own (th, tw, cc) (any c: the four may straddle taps). bk is B's offset of k
  // (b_off + th*b_tap_h + tw*b_tap_w + cc; the row's n*b_row is added at the copy); k < K exactly
  // when th < taps_h.
  constexpr int kParts = kWide ? 1 : 4;
  int64_t bk[kParts];
  int kc[kParts], kw_[kParts], kh_[kParts];
  AE_IGEMM_UNROLL
  for (int e = 0; e < kParts; ++e) {
    const int64_t k = k_begin + kChunkElems * chunk + e;
    kc[e] = static_cast<int>(k % p.c);
    kw_[e] = static_cast<int>(k / p.c % p.taps_w);
    kh_[e] = static_cast<int>(k / p.c / p.taps_w);
    bk[e] = p.b_off + kh_[e] * p.b_tap_h + kw_[e] * p.b_tap_w + kc[e];
  }

  // Issues this thread's copies of the next K tile into `stage`, then advances k by one tile.
  const auto issue_tile = [&](int stage) {
    float* as = smem + stage * T::kStageFloats;
    float* bs = as + T::kBlockM * kTileK;
    AE_IGEMM_UNROLL
    for (int e = 0; e < kParts; ++e) {
      const bool k_ok = kh_[e] < p.taps_h;
      const int dh = p.tap_dir * kh_[e], dw = p.tap_dir * kw_[e];
      AE_IGEMM_UNROLL
      for (int i = 0; i < T::kLoadsA; ++i) {
        const int row = row_first + i * T::kRowsPerPass;
        const int ih = a_ih0[i] + dh, iw = a_iw0[i] + dw;
        const bool ok = k_ok && ih >= 0 && ih < p.h && iw >= 0 && iw < p.wd;
        const Elem* src = ok ? p.a + a_base[i] + (static_cast<int64_t>(ih) * p.wd + iw) * p.c + kc[e] : p.a;
        if constexpr (kWide) {
          cp_async_cg_16(as + swizzle(row, chunk, copy_mask), src, ok ? 16 : 0);
        } else {
          cp_async_ca<4>(as + swizzle(row, chunk, copy_mask) + e, src, ok ? 4 : 0);
        }
      }
      AE_IGEMM_UNROLL
      for (int i = 0; i < T::kLoadsB; ++i) {
        const int row = row_first + i * T::kRowsPerPass;
        const bool ok = k_ok && n0 + row < p.n;
        const Elem* src = ok ? p.b + static_cast<int64_t>(n0 + row) * p.b_row + bk[e] : p.b;
        if constexpr (kWide) {
          cp_async_cg_16(bs + swizzle(row, chunk, copy_mask), src, ok ? 16 : 0);
        } else {
          cp_async_ca<4>(bs + swizzle(row, chunk, copy_mask) + e, src, ok ? 4 : 0);
        }
      }
      kc[e] += kStageK;
      bk[e] += kStageK;
      while (kc[e] >= p.c) {
        kc[e] -= p.c;
        bk[e] += p.b_tap_w - p.c;  // cc wraps into tw
        if (++kw_[e] == p.taps_w) {
          kw_[e] = 0;
          ++kh_[e];
          bk[e] += p.b_tap_h - p.taps_w * p.b_tap_w;  // tw wraps into th
        }
      }
    }
  };

  // ---- the pipeline (see the top of the file) ------------------------------------------------
  const int warp_m = (warp % (T::kBlockM / T::kWarpTileM)) * T::kWarpTileM;
  const int warp_n = (warp / (T::kBlockM / T::kWarpTileM)) * T::kWarpTileN;
  float acc[T::kMmaTilesM][T::kMmaTilesN][4] = {};
  run_pipeline(k_tiles, issue_tile, [&](int stage) {
    const float* as = smem + stage * T::kStageFloats;
    const float* bs = as + T::kBlockM * kTileK;
    AE_IGEMM_UNROLL
    for (int k0 = 0; k0 < kStageK; k0 += Math::kStepK) {
      uint32_t a[T::kMmaTilesM][4], b[T::kMmaTilesN][2];
      load_fragments<Math, T, kBf16Stage>(as, bs, warp_m, warp_n, k0, a, b);
      mma_warp_tile<Math, T>(acc, a, b);
    }
  });

  // ---- epilogue: C fragment (g, 2 tig + {0, 1}) and (g + 8, ...) of each mma tile ------------
  const int lane = tid % kWarp, g = lane >> 2, tig = lane & 3;
  // even N: (m, n), (m, n + 1) form an aligned float2 (every out offset is a multiple of N, and out
  // is 8-byte aligned: conv_igemm_supported)
  const bool pairs = (p.n & 1) == 0;
  AE_IGEMM_UNROLL
  for (int mi = 0; mi < T::kMmaTilesM; ++mi) {
    AE_IGEMM_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int64_t m = m0 + warp_m + 16 * mi + g + 8 * half;
      if (m >= p.m) continue;
      const int64_t col = m % p.rows_w, t = m / p.rows_w;
      float* orow = p.out + static_cast<int64_t>(blockIdx.z) * p.out_slice + p.out_off + t / p.rows_h * p.out_img + t % p.rows_h * p.out_row + col * p.out_col;
      AE_IGEMM_UNROLL
      for (int ni = 0; ni < T::kMmaTilesN; ++ni) {
        const int n = n0 + warp_n + 8 * ni + 2 * tig;
        const float v0 = acc[mi][ni][2 * half], v1 = acc[mi][ni][2 * half + 1];
        if (pairs && n + 1 < p.n) {
          store_pair(orow + n, v0, v1);
        } else {
          if (n < p.n) orow[n] = v0;
          if (n + 1 < p.n) orow[n + 1] = v1;
        }
      }
    }
  }
  if (p.stats != nullptr) {  // uniform over the grid: no divergent __syncthreads
    static_assert(T::kSharedBytes >= sizeof(double) * (T::kThreads + T::kBlockN), "statistics scratch fits the stages");
    __syncthreads();  // the tile is stored (visible block-wide) and no stage is read any more
    const int rows = static_cast<int>(p.m - m0 < T::kBlockM ? p.m - m0 : T::kBlockM);
    const int cols = p.n - n0 < T::kBlockN ? p.n - n0 : T::kBlockN;
    tile_channel_stats<T::kThreads, T::kBlockN>(p.out, p.n, m0, rows, n0, cols, blockIdx.x, p.stats,
                                                reinterpret_cast<double*>(smem));
  }
}

std::atomic<int64_t> g_f32_tiled{0}, g_tc_tiled{0}, g_pipelined64{0}, g_pipelined128{0}, g_pipelined_narrow{0};
std::atomic<int64_t> g_pipelined_split{0}, g_pipelined_bf16{0}, g_bf16_widened{0}, g_stem_padded{0};
std::atomic<int> g_kernel{static_cast<int>(ConvForwardKernel::automatic)};
std::atomic<int64_t> g_split_k{0};  // set_conv_forward_split_k
std::atomic<int64_t> g_dgrad_f32_tiled{0}, g_dgrad_tc_tiled{0}, g_dgrad64{0}, g_dgrad128{0}, g_dgrad_narrow{0};
std::atomic<int> g_dgrad_kernel{static_cast<int>(ConvBackwardDataKernel::automatic)};

template <class Math, class T, class Elem>
void launch_igemm(const LaunchSite& site, const ArgsOf<Elem>& args, bool wide, int64_t slices) {
  const dim3 grid(static_cast<unsigned>((args.m + T::kBlockM - 1) / T::kBlockM),
                  static_cast<unsigned>((args.n + T::kBlockN - 1) / T::kBlockN), static_cast<unsigned>(slices));
  if constexpr (sizeof(Elem) == 2) {
    (void)wide;  // always 16-byte copies (conv_forward_pipelined_bf16)
    launch(site, &conv_igemm_kernel<Math, T, true, Elem>, grid, dim3(T::kThreads), T::kSharedBytes, Stream{}, args);
  } else if (wide) {
    launch(site, &conv_igemm_kernel<Math, T, true>, grid, dim3(T::kThreads), T::kSharedBytes, Stream{}, args);
  } else {
    launch(site, &conv_igemm_kernel<Math, T, false>, grid, dim3(T::kThreads), T::kSharedBytes, Stream{}, args);
  }
}

// bf16 storage: bf16 math only (the operands are bf16 already), 16-byte copies.
void run(const LaunchSite& site, bool large, const ArgsOf<uint16_t>& args, int64_t slices) {
  if (large) {
    launch_igemm<gemm::Bf16Math, Tiles128>(site, args, true, slices);
  } else {
    launch_igemm<gemm::Bf16Math, Tiles64>(site, args, true, slices);
  }
}

// Launches `args` in `math` with 128x128 tiles when `large` (64x64 otherwise), 16-byte copies
// when `wide`, over `slices` K slices (grid.z). The one launch path of both problems.
void run(const LaunchSite& site, ConvMath math, bool large, bool wide, const Args& args, int64_t slices = 1) {
  if (large) {
    if (math == ConvMath::tf32) {
      launch_igemm<gemm::Tf32Math, Tiles128>(site, args, wide, slices);
    } else {
      launch_igemm<gemm::Bf16Math, Tiles128>(site, args, wide, slices);
    }
  } else {
    if (math == ConvMath::tf32) {
      launch_igemm<gemm::Tf32Math, Tiles64>(site, args, wide, slices);
    } else {
      launch_igemm<gemm::Bf16Math, Tiles64>(site, args, wide, slices);
    }
  }
}

}  // namespace igemm

ConvForwardKernel conv_forward_kernel() { return static_cast<ConvForwardKernel>(igemm::g_kernel.load()); }
void set_conv_forward_kernel(ConvForwardKernel kernel) { igemm::g_kernel.store(static_cast<int>(kernel)); }

ConvForwardLaunches conv_forward_launches() {
  ConvForwardLaunches l;
  l.f32_tiled = igemm::g_f32_tiled.load();
  l.tc_tiled = igemm::g_tc_tiled.load();
  l.pipelined_64x64 = igemm::g_pipelined64.load();
  l.pipelined_128x128 = igemm::g_pipelined128.load();
  l.pipelined_4byte = igemm::g_pipelined_narrow.load();
  l.pipelined_split_k = igemm::g_pipelined_split.load();
  l.pipelined_bf16_storage = igemm::g_pipelined_bf16.load();
  l.bf16_widened = igemm::g_bf16_widened.load();
  l.stem_padded = igemm::g_stem_padded.load();
  return l;
}
void note_conv_forward_bf16_widened() { ++igemm::g_bf16_widened; }
void note_conv_forward_stem_padded() { ++igemm::g_stem_padded; }
void note_conv_forward_f32_tiled() { ++igemm::g_f32_tiled; }
void note_conv_forward_tc_tiled() { ++igemm::g_tc_tiled; }

bool conv_forward_pipelined_supported(const ConvGeometry& g, const void* x, const void* w) {
  return igemm::aligned(x, 4) && igemm::aligned(w, 4) && (g.o + 63) / 64 <= 65535 && g.m() > 0 && g.o > 0 &&
         g.h < (1 << 30) && g.w < (1 << 30) && g.c < (1 << 30) && g.o < (1 << 30) && g.kh * g.kw < (1 << 30);
}

bool conv_forward_pipelined_wide(const ConvGeometry& g, const float* x, const float* w) {
  return g.c % 4 == 0 && igemm::aligned(x, 16) && igemm::aligned(w, 16);
}

bool conv_forward_bf16_storage_runs(ConvMath math, const ConvGeometry& g, const void* x, const void* w) {
  return math == ConvMath::bf16 && conv_forward_kernel() != ConvForwardKernel::tiled &&
         conv_forward_pipelined_supported(g, x, w) && g.c % 8 == 0 && igemm::aligned(x, 16) &&
         igemm::aligned(w, 16);
}

int64_t conv_forward_split_k() { return igemm::g_split_k.load(); }
void set_conv_forward_split_k(int64_t slices) { igemm::g_split_k.store(slices < 0 ? 0 : slices); }

int64_t conv_forward_split_count(int64_t k, int64_t output_tiles) {
  // Below this many k per slice (8 pipeline tiles of 32), the ring's fill and drain and writing
  // and re-reading a partial y cost more than the extra blocks gain (a guess, not measured). The
  // same figures as backward-weight's conv_wgrad_split_count.
  constexpr int64_t kMinKPerSlice = 256;
  constexpr int64_t kTargetBlocks = 264;  // about two waves of 64x64 blocks on a 132-SM GPU
  constexpr int64_t kMaxSlices = 64;
  const int64_t by_work = k / kMinKPerSlice;
  const int64_t by_occupancy = (kTargetBlocks + output_tiles - 1) / std::max<int64_t>(output_tiles, 1);
  return std::clamp<int64_t>(std::min(by_work, by_occupancy), 1, kMaxSlices);
}

ConvForwardSplit conv_forward_split_plan(const ConvGeometry& g) {
  const int64_t k = g.k();
  const int64_t k_unsplit = std::max<int64_t>((k + 63) / 64, 1) * 64;
  ConvForwardSplit split{1, k_unsplit};
  const int64_t setting = conv_forward_split_k();
  int64_t wanted = setting;
  if (setting == 0) {
    if (conv_forward_kernel() != ConvForwardKernel::automatic) return split;
    wanted = conv_forward_split_count(k, ((g.m() + 63) / 64) * ((g.o + 63) / 64));
  }
  if (wanted <= 1 || k <= 64) return split;
  const int64_t per = (k + wanted - 1) / wanted;
  split.k_per_split = (per + 63) / 64 * 64;
  split.slices = (k + split.k_per_split - 1) / split.k_per_split;  // the rounding may drop some
  if (split.slices <= 1) split = ConvForwardSplit{1, k_unsplit};
  return split;
}

namespace {

// The forward's gather description (the general form at the top of the file) over `split`: y, or
// the slices' partials when split.slices > 1.
template <class Elem>
igemm::ArgsOf<Elem> forward_args(const ConvGeometry& g, const Elem* x, const Elem* w, float* y,
                                 const ConvForwardSplit& split, float* partials) {
  const bool sliced = split.slices > 1;
  igemm::ArgsOf<Elem> a{};
  a.a = x, a.b = w, a.out = sliced ? partials : y;
  a.m = g.m(), a.k = g.k(), a.n = static_cast<int>(g.o);
  a.a_img = g.h * g.w * g.c;
  a.h = static_cast<int>(g.h), a.wd = static_cast<int>(g.w), a.c = static_cast<int>(g.c);
  a.taps_h = static_cast<int>(g.kh), a.taps_w = static_cast<int>(g.kw), a.tap_dir = 1;
  a.rows_h = static_cast<int>(g.oh), a.rows_w = static_cast<int>(g.ow);
  a.step_h = static_cast<int>(g.sh), a.step_w = static_cast<int>(g.sw);
  a.off_h = static_cast<int>(-g.ph), a.off_w = static_cast<int>(-g.pw);
  a.b_row = g.k(), a.b_off = 0, a.b_tap_h = g.kw * g.c, a.b_tap_w = g.c;  // B[o, k] = w[o * K + k]
  a.out_off = 0, a.out_img = g.oh * g.ow * g.o, a.out_row = g.ow * g.o, a.out_col = g.o;  // y[m * O + o]
  // One slice: all of K (>= K, so no block stops early); several: slice s to partials + s * M*O.
  a.k_per_split = sliced ? split.k_per_split : std::max<int64_t>(a.k, 1);
  a.out_slice = sliced ? g.m() * g.o : 0;
  return a;
}

bool split_usable(const ConvGeometry& g, const float* y, const ConvForwardSplit& split, const float* partials) {
  return igemm::aligned(y, 8) &&
         (split.slices <= 1 || (partials != nullptr && igemm::aligned(partials, 8) && split.k_per_split % 64 == 0 &&
                                split.slices <= 65535 && (split.slices - 1) * split.k_per_split < g.k()));
}

// The tile size, the launch counters and the statistics hook, common to both storages. Returns
// whether the tiles are 128x128.
template <class Elem>
bool prepare_launch(igemm::ArgsOf<Elem>& a, const ConvForwardSplit& split, ConvOutputStats* stats) {
  const bool sliced = split.slices > 1;
  if (sliced) ++igemm::g_pipelined_split;
  const ConvForwardKernel choice = conv_forward_kernel();
  bool large = choice == ConvForwardKernel::pipelined_128x128;
  if (choice == ConvForwardKernel::automatic) large = igemm::large_tiles_pay(a.m, a.n, sliced ? split.slices : 1);
  ++(large ? igemm::g_pipelined128 : igemm::g_pipelined64);
  if (stats != nullptr && !sliced) {
    a.stats = stats->partials;
    stats->tile_rows = large ? igemm::Tiles128::kBlockM : igemm::Tiles64::kBlockM;
  }
  return large;
}

}  // namespace

bool conv_forward_pipelined(const LaunchSite& site, ConvMath math, const ConvGeometry& g, const float* x,
                            const float* w, float* y, const ConvForwardSplit& split, float* partials,
                            ConvOutputStats* stats, int64_t w_row) {
  AE_CHECK(w_row == 0 || w_row >= g.k(),
           "conv_forward_pipelined: weight rows " << w_row << " floats apart, shorter than K = " << g.k());
  if (math == ConvMath::f32 || conv_forward_kernel() == ConvForwardKernel::tiled ||
      !conv_forward_pipelined_supported(g, x, w) || !split_usable(g, y, split, partials)) {
    return false;
  }
  igemm::Args a = forward_args(g, x, w, y, split, partials);
  if (w_row != 0) a.b_row = w_row;
  const bool wide = conv_forward_pipelined_wide(g, x, w) && a.b_row % 4 == 0;
  if (!wide) ++igemm::g_pipelined_narrow;
  const bool large = prepare_launch(a, split, stats);
  igemm::run(site, math, large, wide, a, split.slices > 1 ? split.slices : 1);
  return true;
}

bool conv_forward_pipelined_bf16(const LaunchSite& site, const ConvGeometry& g, const BFloat16* x,
                                 const BFloat16* w, float* y, const ConvForwardSplit& split, float* partials,
                                 ConvOutputStats* stats) {
  if (!conv_forward_bf16_storage_runs(conv_math(), g, x, w) || !split_usable(g, y, split, partials)) return false;
  igemm::ArgsOf<uint16_t> a = forward_args(g, reinterpret_cast<const uint16_t*>(x),
                                           reinterpret_cast<const uint16_t*>(w), y, split, partials);
  ++igemm::g_pipelined_bf16;
  const bool large = prepare_launch(a, split, stats);
  igemm::run(site, large, a, split.slices > 1 ? split.slices : 1);
  return true;
}

// ---- backward-data --------------------------------------------------------------------------

ConvBackwardDataKernel conv_backward_data_kernel() {
  return static_cast<ConvBackwardDataKernel>(igemm::g_dgrad_kernel.load());
}
void set_conv_backward_data_kernel(ConvBackwardDataKernel kernel) {
  igemm::g_dgrad_kernel.store(static_cast<int>(kernel));
}

ConvBackwardDataLaunches conv_backward_data_launches() {
  ConvBackwardDataLaunches l;
  l.f32_tiled = igemm::g_dgrad_f32_tiled.load();
  l.tc_tiled = igemm::g_dgrad_tc_tiled.load();
  l.pipelined_64x64 = igemm::g_dgrad64.load();
  l.pipelined_128x128 = igemm::g_dgrad128.load();
  l.pipelined_4byte = igemm::g_dgrad_narrow.load();
  return l;
}
void note_conv_backward_data_f32_tiled() { ++igemm::g_dgrad_f32_tiled; }
void note_conv_backward_data_tc_tiled() { ++igemm::g_dgrad_tc_tiled; }

bool conv_backward_data_pipelined_supported(const ConvGeometry& g, const float* dy, const float* dx) {
  return igemm::aligned(dy, 4) && igemm::aligned(dx, 8) && (g.c + 63) / 64 <= 65535 && g.n > 0 && g.c > 0 &&
         g.o > 0 && g.h < (1 << 30) && g.w < (1 << 30) && g.c < (1 << 30) && g.o < (1 << 30) &&
         g.oh < (1 << 30) && g.ow < (1 << 30) && g.kh * g.kw < (1 << 30) && g.sh < (1 << 30) && g.sw < (1 << 30);
}

bool conv_backward_data_pipelined_wide(const ConvGeometry& g, const float* dy, const float* w_t) {
  return g.o % 4 == 0 && igemm::aligned(dy, 16) && igemm::aligned(w_t, 16);
}

bool conv_backward_data_pipelined_enabled(ConvMath math, const ConvGeometry& g, const float* dy, const float* dx) {
  return math != ConvMath::f32 && conv_backward_data_kernel() != ConvBackwardDataKernel::tiled &&
         conv_backward_data_pipelined_supported(g, dy, dx);
}

void conv_backward_data_pipelined_phase(const LaunchSite& site, ConvMath math, const ConvGeometry& g,
                                        const ConvDgradPhase& ph, const float* dy, const float* w_t, float* dx) {
  igemm::Args a{};
  a.a = dy, a.b = w_t, a.out = dx;
  a.m = g.n * ph.rows * ph.cols;
  if (a.m == 0) return;  // no input pixel in this phase
  const bool taps = ph.taps_h > 0 && ph.taps_w > 0;  // none: dx is zero here (k_tiles 0, zeros stored)
  a.k = taps ? ph.taps_h * ph.taps_w * g.o : 0;
  a.n = static_cast<int>(g.c);
  a.a_img = g.oh * g.ow * g.o;
  a.h = static_cast<int>(g.oh), a.wd = static_cast<int>(g.ow), a.c = static_cast<int>(g.o);
  a.taps_h = taps ? static_cast<int>(ph.taps_h) : 0, a.taps_w = taps ? static_cast<int>(ph.taps_w) : 1;
  a.tap_dir = -1;
  a.rows_h = static_cast<int>(ph.rows), a.rows_w = static_cast<int>(ph.cols);
  a.step_h = 1, a.step_w = 1;
  a.off_h = static_cast<int>((ph.rh + g.ph - ph.kh0) / g.sh);  // q: exact, kh0 = (rh + ph) mod sh
  a.off_w = static_cast<int>((ph.rw + g.pw - ph.kw0) / g.sw);
  // B[c, (th, tw, o)] = w_t[kh0 + sh*th, kw0 + sw*tw, c, o]
  a.b_row = g.o, a.b_off = (ph.kh0 * g.kw + ph.kw0) * g.c * g.o;
  a.b_tap_h = g.sh * g.kw * g.c * g.o, a.b_tap_w = g.sw * g.c * g.o;
  // dx[img, rh + sh*i, rw + sw*j, c]
  a.out_off = (ph.rh * g.w + ph.rw) * g.c, a.out_img = g.h * g.w * g.c;
  a.out_row = g.sh * g.w * g.c, a.out_col = g.sw * g.c;
  a.k_per_split = std::max<int64_t>(a.k, 1), a.out_slice = 0;  // one slice
  const bool wide = conv_backward_data_pipelined_wide(g, dy, w_t);
  if (!wide) ++igemm::g_dgrad_narrow;
  const ConvBackwardDataKernel choice = conv_backward_data_kernel();
  bool large = choice == ConvBackwardDataKernel::pipelined_128x128;
  if (choice == ConvBackwardDataKernel::automatic) large = igemm::large_tiles_pay(a.m, a.n);
  ++(large ? igemm::g_dgrad128 : igemm::g_dgrad64);
  igemm::run(site, math, large, wide, a);
}

}  // namespace ae::cuda

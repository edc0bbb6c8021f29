#pragma once
// The pipelined implicit-GEMM tensor-core convolutions: forward and backward-data (one kernel, two
// gather descriptions, conv_implicit_gemm.cu) and backward-weight (conv_wgrad_igemm.cu), and the
// switches and counters that let tests pin which kernel ran.
//
// conv2d_forward (conv.cu) in conv_math() tf32 or bf16 runs the pipelined kernel when
// conv_forward_pipelined_supported() holds, and the generic tensor-core tiled GEMM
// (tiled_gemm_tc.h with conv.cu's InputPatch loader) otherwise. The two give bitwise-identical
// outputs (same mma instructions over the same k-chunks in the same order; see the .cu file), so
// the choice is a matter of speed only.
//
// Conditions for the pipelined kernel, in two variants:
//   wide:   C % 4 == 0 and x, w 16-byte aligned. One 16-byte cp.async moves 4 channels of one input
//           pixel (4 consecutive k, never straddling a kernel tap) or 4 consecutive k of a weight row
//           (K = KH*KW*C is then % 4 too). bf16 needs nothing more: its k-pairs are formed from
//           the f32 words when fragments are read.
//   4-byte: any other shape (odd C, a view at an odd offset, C = 3 under a forced kernel): the
//           same kernel with one 4-byte cp.async per element, each with its own incrementally
//           advanced (kh, kw, c). Slower copies, same pipeline, same bits. The automatic choice
//           pads a C = 3 input (the stem) to 4 channels instead (conv_backward.h, "stem path").
// Both need the grid to fit (ceil(O / 64) <= 65535 blocks in y) and sizes below 2^30; otherwise,
// and when conv_forward_kernel() is `tiled`, conv2d_forward runs the tiled kernel.
//
// Split-K (the late, small-spatial layers: ResNet layer4 at 7x7 has M = N*49 and K = 4608, too few
// output tiles to fill a large GPU): the pipelined forward may split K over grid.z into `slices`
// slices of k_per_split k each (a multiple of 64, so each slice's mma k-steps are exactly a
// contiguous sub-range of the unsplit kernel's; the last slice may be shorter), each writing its
// partial y to a workspace, summed in slice order afterwards (conv_backward.h's sum_conv_slices:
// double, rounded once). No float atomics; the slices are a function of the shape alone (and of the
// setting below), so the result is bitwise repeatable. But it is NOT bitwise equal to the unsplit
// kernel (nor the tiled one): the summation order changes. Each slice's partial is bitwise what the
// unsplit kernel computes over that k range (tests/gpu/test_cuda_conv_splitk). Automatic split-K
// (conv_forward_split_count) happens only when conv_forward_kernel() is `automatic`, so a forced
// kernel keeps the unsplit kernel's bits unless set_conv_forward_split_k forces slices too.
//
// conv2d_backward_data (conv_backward.cu) in tf32 or bf16 runs the same kernel, once per stride phase,
// when conv_backward_data_pipelined_enabled() holds (the generic tensor-core GEMM with the
// DyThroughTap / WeightByTapThenOut loaders otherwise); again bitwise-identical. It first transposes
// w to w_t [KH, KW, C, O] (a workspace of the weight's size) so that B's k (o) is contiguous.
// Conditions: wide when O % 4 == 0 and dy, w_t 16-byte aligned, 4-byte copies otherwise; always
// dx 8-byte aligned, ceil(C / 64) <= 65535 and sizes below 2^30. Every stride is covered: a phase
// is a stride-1 problem (conv_backward.cu).
//
// conv2d_backward_weight (conv_backward.cu) in tf32 or bf16 runs a second pipelined kernel
// (conv_wgrad_igemm.cu: same ring, stages laid out [k][row]) over the same split-K slices as the
// generic tensor-core GEMM (DyTransposed / InputUnderTap loaders) and the same slice sum; again
// bitwise-identical. Conditions: 16-byte copies of dy when O % 4 == 0 and dy is 16-byte aligned,
// of x when C % 4 == 0 and x is 16-byte aligned (each operand on its own), 4-byte copies
// otherwise; always ceil(KH*KW*C / 64) <= 65535 and sizes (N*OH*OW included) below 2^30.
//
// bf16 storage (forward only). conv2d_forward also takes x and w as DType::bf16 tensors (both; the
// output y stays f32). In conv_math() bf16, with C % 8 == 0 and x, w 16-byte aligned (every
// ResNet-18 convolution but the C = 3 stem), the pipelined kernel then copies 8 bf16 per 16-byte
// cp.async and stages bf16 (64 k per stage row), reads fragments with ldmatrix and rounds nothing:
// half the operand bytes of the f32-storage kernel from global memory and through shared memory.
// Its output is bitwise the f32-storage bf16 kernel's on the widened operands (same registers: a
// bf16 value rounded to bf16 is itself; same k-steps), split-K and statistics included. Any other
// case (f32 or tf32 math, C % 8 != 0, a forced `tiled` kernel, an unaligned view) widens x and w
// to f32 first (exact) and runs the f32-storage path: same result, counted in bf16_widened.
// Host code only (no kernel dialect), so tests can include it.
#include "kernels/conv_geometry.h"
#include "kernels/cuda/conv_math.h"
#include "runtime/bf16.h"

namespace ae::cuda {

struct LaunchSite;       // kernels/cuda/launch.h
struct ConvOutputStats;  // kernels/cuda/conv_stats.h

// Which forward kernel the tensor-core modes use. `automatic` (the default) picks the pipelined
// kernel where supported and its tile size by grid size; the others force a choice for tests and
// benchmarks (a forced pipelined kernel on an unsupported shape still falls back to `tiled`).
enum class ConvForwardKernel { automatic, tiled, pipelined_64x64, pipelined_128x128 };

ConvForwardKernel conv_forward_kernel();
void set_conv_forward_kernel(ConvForwardKernel kernel);

class ScopedConvForwardKernel {
 public:
  explicit ScopedConvForwardKernel(ConvForwardKernel k) : previous_(conv_forward_kernel()) {
    set_conv_forward_kernel(k);
  }
  ~ScopedConvForwardKernel() { set_conv_forward_kernel(previous_); }
  ScopedConvForwardKernel(const ScopedConvForwardKernel&) = delete;
  ScopedConvForwardKernel& operator=(const ScopedConvForwardKernel&) = delete;

 private:
  ConvForwardKernel previous_;
};

// Launches of each conv2d_forward kernel since the process started (monotonic; tests take
// differences around a call).
struct ConvForwardLaunches {
  int64_t f32_tiled = 0;          // CUDA-core tiled GEMM (conv_math f32)
  int64_t tc_tiled = 0;           // tensor-core tiled GEMM, gather per element (tiled_gemm_tc.h)
  int64_t pipelined_64x64 = 0;    // this kernel, 64x64 block tiles (4 warps)
  int64_t pipelined_128x128 = 0;  // this kernel, 128x128 block tiles (4 warps of 64x64)
  int64_t pipelined_4byte = 0;    // of the two above, launches with 4-byte copies (not C % 4, unaligned)
  int64_t pipelined_split_k = 0;  // of the two above, launches split over K (grid.z > 1, then a slice sum)
  int64_t pipelined_bf16_storage = 0;  // of the two above, launches reading bf16 x and w (bf16 staging)
  int64_t bf16_widened = 0;        // conv2d_forward calls whose bf16 x and w were widened to f32 first
  int64_t stem_padded = 0;  // conv2d_forward calls whose C = 3 x and w were padded to 4 channels first
                            // (conv_backward.h, "stem path"; the launch is counted above as well)
};
ConvForwardLaunches conv_forward_launches();
void note_conv_forward_f32_tiled();
void note_conv_forward_tc_tiled();
void note_conv_forward_bf16_widened();
void note_conv_forward_stem_padded();

// Whether the pipelined kernel can run this forward, and whether with 16-byte copies (the
// conditions above).
bool conv_forward_pipelined_supported(const ConvGeometry& g, const void* x, const void* w);
bool conv_forward_pipelined_wide(const ConvGeometry& g, const float* x, const float* w);

// Split-K of the pipelined forward: 0 (the default) = automatic (conv_forward_split_count, and only
// when conv_forward_kernel() is `automatic`), 1 = never split, n > 1 = ask for n slices with any
// pipelined kernel (k_per_split = ceil(K / n) rounded up to 64, so fewer may result; see
// conv_forward_split_plan). For tests and benchmarks.
int64_t conv_forward_split_k();
void set_conv_forward_split_k(int64_t slices);

class ScopedConvForwardSplitK {
 public:
  explicit ScopedConvForwardSplitK(int64_t slices) : previous_(conv_forward_split_k()) {
    set_conv_forward_split_k(slices);
  }
  ~ScopedConvForwardSplitK() { set_conv_forward_split_k(previous_); }
  ScopedConvForwardSplitK(const ScopedConvForwardSplitK&) = delete;
  ScopedConvForwardSplitK& operator=(const ScopedConvForwardSplitK&) = delete;

 private:
  int64_t previous_;
};

// The automatic slice count for a reduction of length k over `output_tiles` 64x64 output tiles:
// enough blocks for about two waves on a 132-SM GPU, at least 256 k per slice, at most 64 slices.
// A function of the shape alone (a guess to be replaced by measurements).
int64_t conv_forward_split_count(int64_t k, int64_t output_tiles);

// The slices the pipelined forward would use for g under the current settings: slice s covers
// k in [s * k_per_split, min(K, (s + 1) * k_per_split)), k_per_split a multiple of 64 (and
// slices == 1 with k_per_split >= K when unsplit).
struct ConvForwardSplit {
  int64_t slices = 1;
  int64_t k_per_split = 0;
};
ConvForwardSplit conv_forward_split_plan(const ConvGeometry& g);

// Runs y = conv(x, w) with the pipelined kernel in `math` (tf32 or bf16) and returns true, or
// returns false without launching anything when it is not supported or conv_forward_kernel() is
// `tiled`. With split.slices > 1, slice s of the partial y goes to partials + s * M*O (the caller
// allocates slices * M*O floats and sums them into y, in slice order, with sum_conv_slices); with
// one slice y is written directly and `partials` is unused. `split` must come from
// conv_forward_split_plan(g).
// With `stats` (unsplit only: ignored when split.slices > 1), each block also writes its output
// tile's per-channel statistics to stats->partials and stats->tile_rows is set (conv_stats.h).
// w is read as an [O, K] matrix with rows w_row floats apart (0: K, the dense OHWI weight; the
// stem path's is wider, conv_backward.h's pad_stem_weight); 16-byte copies need w_row % 4 == 0.
bool conv_forward_pipelined(const LaunchSite& site, ConvMath math, const ConvGeometry& g, const float* x,
                            const float* w, float* y, const ConvForwardSplit& split = {},
                            float* partials = nullptr, ConvOutputStats* stats = nullptr, int64_t w_row = 0);

// Whether bf16 x and w run the bf16-storage kernel in `math` ("bf16 storage" above).
bool conv_forward_bf16_storage_runs(ConvMath math, const ConvGeometry& g, const void* x, const void* w);
// As conv_forward_pipelined, on bf16 x and w in conv_math() (false, nothing launched, when
// conv_forward_bf16_storage_runs does not hold: the caller widens the operands).
bool conv_forward_pipelined_bf16(const LaunchSite& site, const ConvGeometry& g, const BFloat16* x,
                                 const BFloat16* w, float* y, const ConvForwardSplit& split = {},
                                 float* partials = nullptr, ConvOutputStats* stats = nullptr);

// ---- backward-data --------------------------------------------------------------------------

// Which backward-data kernel the tensor-core modes use (as ConvForwardKernel; a forced pipelined
// kernel on an unsupported shape still falls back to `tiled`).
enum class ConvBackwardDataKernel { automatic, tiled, pipelined_64x64, pipelined_128x128 };

ConvBackwardDataKernel conv_backward_data_kernel();
void set_conv_backward_data_kernel(ConvBackwardDataKernel kernel);

class ScopedConvBackwardDataKernel {
 public:
  explicit ScopedConvBackwardDataKernel(ConvBackwardDataKernel k) : previous_(conv_backward_data_kernel()) {
    set_conv_backward_data_kernel(k);
  }
  ~ScopedConvBackwardDataKernel() { set_conv_backward_data_kernel(previous_); }
  ScopedConvBackwardDataKernel(const ScopedConvBackwardDataKernel&) = delete;
  ScopedConvBackwardDataKernel& operator=(const ScopedConvBackwardDataKernel&) = delete;

 private:
  ConvBackwardDataKernel previous_;
};

// Kernel launches of conv2d_backward_data since the process started, one per stride phase that
// has input pixels (monotonic; tests take differences around a call).
struct ConvBackwardDataLaunches {
  int64_t f32_tiled = 0;          // CUDA-core tiled GEMM (conv_math f32)
  int64_t tc_tiled = 0;           // tensor-core tiled GEMM (tiled_gemm_tc.h)
  int64_t pipelined_64x64 = 0;    // the pipelined kernel, 64x64 block tiles
  int64_t pipelined_128x128 = 0;  // the pipelined kernel, 128x128 block tiles
  int64_t pipelined_4byte = 0;    // of the two above, launches with 4-byte copies (O % 4 != 0, unaligned dy)
};
ConvBackwardDataLaunches conv_backward_data_launches();
void note_conv_backward_data_f32_tiled();
void note_conv_backward_data_tc_tiled();

bool conv_backward_data_pipelined_supported(const ConvGeometry& g, const float* dy, const float* dx);
bool conv_backward_data_pipelined_wide(const ConvGeometry& g, const float* dy, const float* w_t);
// math is tf32 / bf16, conv_backward_data_kernel() is not `tiled`, and the shape is supported.
bool conv_backward_data_pipelined_enabled(ConvMath math, const ConvGeometry& g, const float* dy, const float* dx);

// One stride phase of backward-data (conv_backward.cu's DgradPhase): input pixels
// (rh + sh*i, rw + sw*j), i < rows, j < cols, reached by taps kh = kh0 + sh*th (th < taps_h), and
// likewise in w.
struct ConvDgradPhase {
  int64_t rh = 0, rw = 0, rows = 0, cols = 0, kh0 = 0, kw0 = 0, taps_h = 0, taps_w = 0;
};

// dx over the phase's pixels with the pipelined kernel (nothing when the phase has no pixel; zeros
// when it has no tap). w_t = w transposed to [KH, KW, C, O]. Call only when _enabled() holds.
void conv_backward_data_pipelined_phase(const LaunchSite& site, ConvMath math, const ConvGeometry& g,
                                        const ConvDgradPhase& phase, const float* dy, const float* w_t, float* dx);

// ---- backward-weight (conv_wgrad_igemm.cu) ----------------------------------------------------

// Which backward-weight kernel the tensor-core modes use (as ConvForwardKernel; a forced pipelined
// kernel on an unsupported shape still falls back to `tiled`).
enum class ConvBackwardWeightKernel { automatic, tiled, pipelined_64x64, pipelined_128x128 };

ConvBackwardWeightKernel conv_backward_weight_kernel();
void set_conv_backward_weight_kernel(ConvBackwardWeightKernel kernel);

class ScopedConvBackwardWeightKernel {
 public:
  explicit ScopedConvBackwardWeightKernel(ConvBackwardWeightKernel k) : previous_(conv_backward_weight_kernel()) {
    set_conv_backward_weight_kernel(k);
  }
  ~ScopedConvBackwardWeightKernel() { set_conv_backward_weight_kernel(previous_); }
  ScopedConvBackwardWeightKernel(const ScopedConvBackwardWeightKernel&) = delete;
  ScopedConvBackwardWeightKernel& operator=(const ScopedConvBackwardWeightKernel&) = delete;

 private:
  ConvBackwardWeightKernel previous_;
};

// GEMM launches of conv2d_backward_weight since the process started, one per call (the slice sum
// that follows a split-K launch is not counted; monotonic, tests take differences around a call).
struct ConvBackwardWeightLaunches {
  int64_t f32_tiled = 0;          // CUDA-core tiled GEMM (conv_math f32)
  int64_t tc_tiled = 0;           // tensor-core tiled GEMM (tiled_gemm_tc.h)
  int64_t pipelined_64x64 = 0;    // the pipelined kernel, 64x64 block tiles
  int64_t pipelined_128x128 = 0;  // the pipelined kernel, 128x128 block tiles
  int64_t pipelined_4byte = 0;    // of the two above, launches with 4-byte copies of dy or of x
  int64_t stem_padded = 0;        // of the two above, launches on x padded from C = 3 to 4 channels
};
ConvBackwardWeightLaunches conv_backward_weight_launches();
void note_conv_backward_weight_f32_tiled();
void note_conv_backward_weight_tc_tiled();
void note_conv_backward_weight_stem_padded();

bool conv_backward_weight_pipelined_supported(const ConvGeometry& g, const float* x, const float* dy);
// 16-byte copies of dy (O % 4 == 0, dy 16-byte aligned) and of x (C % 4 == 0, x 16-byte aligned).
bool conv_backward_weight_pipelined_wide_dy(const ConvGeometry& g, const float* dy);
bool conv_backward_weight_pipelined_wide_x(const ConvGeometry& g, const float* x);

// The weight-gradient GEMM dw[o, j] = sum_r dy[r, o] * X[r, j] with the pipelined kernel in `math`,
// split over grid.z into `slices` slices of k_per_split rows r (a multiple of 64; the last one
// ragged): slice s is stored to out + s * O*J (out = dw when slices is 1). Returns false without
// launching anything when math is f32, conv_backward_weight_kernel() is `tiled` or the shape is not
// supported (the caller then runs the generic kernel with the same slices).
bool conv_backward_weight_pipelined(const LaunchSite& site, ConvMath math, const ConvGeometry& g, const float* x,
                                    const float* dy, float* out, int64_t k_per_split, int64_t slices);

}  // namespace ae::cuda

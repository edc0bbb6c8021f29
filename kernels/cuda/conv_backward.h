#pragma once
// Tuning choices of the CUDA convolution backward passes that tests need to see (so they can pick
// shapes that exercise both the single-slice and the split-K paths of backward-weight), and what
// the forward and backward-weight share: the split-K slice sum and the stem's channel padding.
#include <cstdint>

#include "runtime/tensor.h"

namespace ae::cuda {

// Number of fixed K slices backward-weight splits its reduction over N*OH*OW into, for a weight
// gradient covering `output_tiles` 64x64 GEMM tiles. A function of the shape alone, so the result
// is bitwise repeatable: slices are reduced in slice order by a second kernel.
int64_t conv_wgrad_split_count(int64_t reduction_rows, int64_t output_tiles);

// out[i] = sum over s < slices, in slice order, of partials[s * elements + i] (in double, rounded
// once): the deterministic sum after a split-K launch, of backward-weight and of the pipelined
// forward (conv.cu). One launch of sum_slices_kernel on the default stream; no synchronisation.
void sum_conv_slices(const float* partials, int64_t slices, int64_t elements, float* out);

// The C = 3 stem path. With C = 3 a pixel's channels are 12 bytes, so the pipelined kernels can
// copy only 4 bytes per cp.async (one element, each with its own address). In tf32 / bf16 with the
// automatic kernel choice, conv2d_forward and conv2d_backward_weight first pad x (and the forward's
// w) with a zero fourth channel, so that one 16-byte cp.async moves one pixel: a quarter of the
// copy instructions, whole sectors, for a third more MMA work (the zero channel's) and one pass
// over x per call (read 12, write 16 bytes a pixel). Backward-weight then drops the fourth channel of its
// dw; each element of dw is the 4-byte path's bits (a column of the weight-gradient GEMM does
// not depend on the others, and the slices are the unpadded problem's). The forward's k-steps
// group other elements, so its y is not the 4-byte path's bits (another tf32 / bf16 rounding per
// mma) but is the wide kernel's on the padded tensors, bit for bit.
// resize_channels: t [..., C] f32 -> [..., channels], the first min(C, channels) channels copied
// and any others zero (the stem path pads with channels = 4 and drops with 3).
Tensor resize_channels(const Tensor& t, int64_t channels);
// The forward's stem weight: w [O, KH, KW, 3] f32 -> [O, stem_weight_row(KH*KW)], row o = w[o]'s
// taps padded to 4 channels, then zeros to a multiple of 8 floats. The forward reads it as its
// [O, K] matrix with that row stride (K = KH*KW*4 columns used), so that every row starts on a
// 32-byte sector: with K = 196 (7x7x4) every other row sat 16 bytes off one, and each 128-byte
// stage-row copy of it touched 5 sectors instead of 4 (a model of the weight's copies: 87.5 %
// sector-efficient, 98 % with the rows aligned; the emulated profile counts the stem forward's
// loads at 87.0 -> 93.2 %, bench/RESULTS.md). The padding columns are never read (k < K).
int64_t stem_weight_row(int64_t taps);
Tensor pad_stem_weight(const Tensor& w);
// Whether the stem path applies to a convolution with c input channels in conv_math() under the
// current kernel choice (`forward`: conv_forward_kernel(), else conv_backward_weight_kernel()).
bool conv_stem_padding_applies(int64_t c, bool forward);

}  // namespace ae::cuda

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
// Whether the stem path applies to a convolution with c input channels in conv_math() under the
// current kernel choice (`forward`: conv_forward_kernel(), else conv_backward_weight_kernel()).
bool conv_stem_padding_applies(int64_t c, bool forward);

}  // namespace ae::cuda

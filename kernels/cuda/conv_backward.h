#pragma once
// Tuning choices of the CUDA convolution backward passes that tests need to see (so they can pick
// shapes that exercise both the single-slice and the split-K paths of backward-weight), and the
// split-K slice sum that backward-weight and the forward share.
#include <cstdint>

namespace ae::cuda {

// Number of fixed K slices backward-weight splits its reduction over N*OH*OW into, for a weight
// gradient covering `output_tiles` 64x64 GEMM tiles. A function of the shape alone, so the result
// is bitwise repeatable: slices are reduced in slice order by a second kernel.
int64_t conv_wgrad_split_count(int64_t reduction_rows, int64_t output_tiles);

// out[i] = sum over s < slices, in slice order, of partials[s * elements + i] (in double, rounded
// once): the deterministic sum after a split-K launch, of backward-weight and of the pipelined
// forward (conv.cu). One launch of sum_slices_kernel on the default stream; no synchronisation.
void sum_conv_slices(const float* partials, int64_t slices, int64_t elements, float* out);

}  // namespace ae::cuda

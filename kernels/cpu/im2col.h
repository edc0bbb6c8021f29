#pragma once
// NHWC im2col / col2im for the CPU convolution (kernels/cpu/conv_cpu.cpp), working on a chunk
// of output lines so the column buffer stays bounded whatever the batch and image size.
//
// An "output line" is one output row of one image: line l = n*OH + oh, holding OW output pixels.
// The column matrix of lines [l0, l1) has (l1-l0)*OW rows and K = KH*KW*C columns; row
// (l, ow) holds the receptive field of that output pixel in (kh, kw, c) order, which is exactly
// the OHWI weight layout, so forward is col * W^T with W viewed as [O, K].
#include <cstddef>
#include <cstdint>

#include "kernels/conv_geometry.h"
#include "kernels/ops.h"

namespace ae::cpu {

using ae::ConvGeometry;  // kernels/conv_geometry.h: the one geometry of every backend

// col[(l-l0)*OW + ow][kh][kw][c] = x[n, oh*SH-PH+kh, ow*SW-PW+kw, c], zero outside the image.
// Both functions split their rows across threads with parallel_rows (kernels/cpu/parallel_rows.h).
void im2col_lines(const ConvGeometry& g, const float* x, int64_t l0, int64_t l1, float* col);

// The adjoint of im2col_lines, for backward-data: gathers the chunk's column lines [l0, l1) into
// dx, dx[n,h,w,c] += every col entry that im2col_lines would have read from there. dx rows are
// numbered n*H + h; rows >= fresh_from have not been written yet (garbage) and are zeroed first,
// rows no window reads included, so dx needs no separate zeroing pass over memory. Returns the
// fresh_from of the next chunk: chunks must come in order. Threads own whole rows: no races.
int64_t col2im_lines(const ConvGeometry& g, const float* col, int64_t l0, int64_t l1, int64_t fresh_from, float* dx);

// Zeroes dx rows [begin_row, end_row): the rows below the last chunk's last window.
void zero_input_rows(const ConvGeometry& g, float* dx, int64_t begin_row, int64_t end_row);

// How the batch is cut into chunks of output lines. A chunk aims at target_bytes of column
// matrix, so im2col writes it into cache and the GEMM reads it back from there, but holds at
// least min_rows rows, so each GEMM call still amortises packing the weights and waking
// OpenBLAS's threads; max_bytes bounds the buffer whatever min_rows asks. A chunk is never less
// than one output line, so one line wider than max_bytes is still processed, as one line.
struct ConvChunking {
  std::size_t target_bytes = std::size_t{2} << 20;
  int64_t min_rows = 512;
  std::size_t max_bytes = std::size_t{64} << 20;
};
ConvChunking conv_chunking();
// Process-wide; for benchmarks tuning the policy and tests forcing many small chunks.
void set_conv_chunking(const ConvChunking& chunking);

// Output lines per chunk under the current policy (>= 1, <= g.lines()).
int64_t conv_lines_per_chunk(const ConvGeometry& g);

// A per-thread scratch buffer of at least `floats` floats, reused between calls (grow only) so
// the column buffer is not allocated and page-faulted on every convolution.
float* conv_workspace(std::size_t floats);

}  // namespace ae::cpu

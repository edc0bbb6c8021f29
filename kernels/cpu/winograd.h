#pragma once
// Winograd convolution F(m x m, 3x3) for 3x3 stride-1 convolutions on the CPU (NHWC, OHWI weights),
// m = 2 (4x4 input tiles) or m = 4 (6x6 input tiles), used by kernels/cpu/conv_cpu.cpp for the
// forward and for backward-data (which is the same kind of convolution: dy padded by 2-pad against
// the weights flipped in space with input and output channels swapped).
//
// With a = m + 2, for each a x a input tile d (zero outside the image) and each channel pair:
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A        (Lavin and Gray, 2016)
// done as: weight transform U[xi][out][in] (a*a matrices), input transform V[xi][tile][in] for a
// chunk of tiles, a*a GEMMs M[xi] = V[xi] * U[xi]^T (OpenBLAS sgemm), output transform of M into y.
// Per output pixel that is a*a/(m*m) multiplications per channel pair instead of 9: 4 (m = 2) or
// 2.25 (m = 4). The transforms are vectorised over channels and compiled once per CpuIsa
// (kernels/cpu/cpu_isa.h); the GEMMs are OpenBLAS's, which chooses its own kernel at run time.
//
// Accuracy: the transforms add and subtract before multiplying, so the error grows with m. Measured
// against double-precision loops in tests/unit/test_winograd.cpp and bounded there: F(2x2,3x3) is
// about as accurate as im2col's direct sums, F(4x4,3x3) 5-10x less (max relative error a few 1e-6).
// In a training forward that error enters BatchNorm's batch statistics, which amplify it: with
// F(4x4) forwards the train-mode PyTorch parity test failed (layer4 weight gradients), so forwards
// use m = 2 by default; backward-data (input gradients, and the data gradients of training) uses
// m = 4, with which every parity case passes (tests/parity, also with Winograd forced everywhere).
#include <cstdint>

#include "kernels/cpu/conv_direct.h"  // ConvEpilogue
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/im2col.h"

namespace ae::cpu {

// Which algorithm CPU convolutions use. automatic: the direct forward (kernels/cpu/conv_direct.h)
// where it is applicable and expected to be faster, else Winograd for 3x3 stride-1 ones where it is
// applicable and expected to be faster (winograd_profitable), else im2col; im2col: always im2col;
// winograd: Winograd wherever applicable, im2col elsewhere; direct: the direct forward wherever
// applicable, im2col elsewhere (tests and benchmarks). Read from AE_CPU_CONV=auto|im2col|winograd|
// direct on first use unless set_conv_algo() was called. The Winograd tile sizes likewise:
// AE_WINOGRAD_TILE=2|4 sets both.
enum class ConvAlgo { automatic, im2col, winograd, direct };
ConvAlgo conv_algo();
void set_conv_algo(ConvAlgo algo);
struct WinogradTiles {
  int forward = 2;        // m of F(m x m, 3x3) for forwards
  int backward_data = 4;  // and for backward-data
};
WinogradTiles winograd_tiles();
void set_winograd_tiles(const WinogradTiles& tiles);  // each 2 or 4
void set_winograd_tile(int m);                        // both

// 3x3 kernel, stride 1, padding <= 2 on each side (backward-data pads dy by 2 - pad).
bool winograd_applicable(const ConvGeometry& g);
// Enough output pixels and channels for the transforms and the larger transformed weight to pay
// (g is the forward's geometry; backward_data: for the backward-data convolution of g).
bool winograd_profitable(const ConvGeometry& g, bool backward_data = false);

// y [N,OH,OW,O] = conv(x, w) for geometry g (winograd_applicable(g)), w OHWI [O,3,3,C], then the
// epilogue (ops::conv2d_batchnorm: eval BatchNorm, residual [N,OH,OW,O], ReLU; kernels/cpu/conv_direct.h),
// applied by the output transform to each tile's pixels inside the image as it writes them, with the
// bits of cpu::batchnorm_apply over the unfused output (kernels/cpu/winograd_epilogue.h).
void winograd_forward(const ConvGeometry& g, const float* x, const float* w, float* y,
                      const ConvEpilogue& epilogue = {});
// dx [N,H,W,C] = conv2d_backward_data of dy [N,OH,OW,O] for geometry g (the forward's).
void winograd_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx);

// Which paths the CPU convolutions took on the calling thread since the last reset (tests check that
// the path they mean to exercise really ran; a counter per ISA for Winograd's transforms).
struct ConvPathCounts {
  int64_t im2col = 0;            // im2col/col2im + GEMM (forward, backward-data or backward-weight)
  int64_t pointwise = 0;         // 1x1 stride-1 unpadded: one GEMM on x itself
  int64_t direct_dot = 0;        // the direct forward (kernels/cpu/conv_direct.h), dot form
  int64_t direct_broadcast = 0;  // and broadcast form
  int64_t fused_epilogue = 0;    // conv2d_batchnorm forwards whose BatchNorm ran in the store
                                 // (the direct forms' or Winograd's output transform)
  int64_t winograd[3] = {0, 0, 0};  // by CpuIsa
  int64_t winograd_m[5] = {0, 0, 0, 0, 0};  // by tile size m (2 or 4)
};
ConvPathCounts& conv_path_counts();  // thread-local
void reset_conv_path_counts();

// Tiles per chunk: the transformed tiles of one chunk (V and M, a*a*(C+O) floats per tile) aim at
// target_bytes, with at least min_tiles tiles (so each GEMM has rows enough to be efficient) and,
// within max_bytes, at least as many tiles as the GEMM has columns (output channels): OpenBLAS packs
// each transformed weight matrix (C x O) once per GEMM call, i.e. once per chunk, and that packing
// is amortised only when the chunk's rows are as many as the weight's columns.
struct WinogradChunking {
  std::size_t target_bytes = std::size_t{4} << 20;
  int64_t min_tiles = 96;
  std::size_t max_bytes = std::size_t{32} << 20;
};
WinogradChunking winograd_chunking();
void set_winograd_chunking(const WinogradChunking& chunking);

}  // namespace ae::cpu

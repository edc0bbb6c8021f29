#pragma once
// The pipelined implicit-GEMM tensor-core convolution forward (conv_implicit_gemm.cu), and the
// switches and counters that let tests pin which forward kernel ran.
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
//   4-byte: any other shape (C = 3 of the stem, odd C, a view at an odd offset): the same kernel
//           with one 4-byte cp.async per element, each with its own incrementally advanced
//           (kh, kw, c). Slower copies, same pipeline, same bits.
// Both need the grid to fit (ceil(O / 64) <= 65535 blocks in y) and sizes below 2^30; otherwise,
// and when conv_forward_kernel() is `tiled`, conv2d_forward runs the tiled kernel.
// Host code only (no kernel dialect), so tests can include it.
#include "kernels/conv_geometry.h"
#include "kernels/cuda/conv_math.h"

namespace ae::cuda {

struct LaunchSite;  // kernels/cuda/launch.h

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
  int64_t pipelined_128x128 = 0;  // this kernel, 128x128 block tiles (8 warps)
  int64_t pipelined_4byte = 0;    // of the two above, launches with 4-byte copies (not C % 4, unaligned)
};
ConvForwardLaunches conv_forward_launches();
void note_conv_forward_f32_tiled();
void note_conv_forward_tc_tiled();

// Whether the pipelined kernel can run this forward, and whether with 16-byte copies (the
// conditions above).
bool conv_forward_pipelined_supported(const ConvGeometry& g, const float* x, const float* w);
bool conv_forward_pipelined_wide(const ConvGeometry& g, const float* x, const float* w);

// Runs y = conv(x, w) with the pipelined kernel in `math` (tf32 or bf16) and returns true, or
// returns false without launching anything when it is not supported or conv_forward_kernel() is
// `tiled`.
bool conv_forward_pipelined(const LaunchSite& site, ConvMath math, const ConvGeometry& g, const float* x,
                            const float* w, float* y);

}  // namespace ae::cuda

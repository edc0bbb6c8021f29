#pragma once
// Direct convolution forwards, in two forms, for the layers where im2col + sgemm and Winograd pay
// more for moving data than for multiplying. Both read NHWC input through a small per-tile table of
// tap pointers (the input run under each tap of each output pixel's window, or a run of zeros where
// the window leaves the image) and write each output once: no column matrix, no packed copies.
//
// dot form, vectors over input channels (C a multiple of the vector width): for layer3 and layer4
// at batch 1, where an im2col GEMM has 49-196 rows against weights of up to 4608 x 512 and OpenBLAS
// spent as long packing the weights each call as multiplying (perf, batch-1 forward: sgemm_incopy +
// sgemm_oncopy 17 % of the cycles against the kernel's 40 %). A register tile of R output pixels by
// J output channels reads R input runs and J weight rows (OHWI: contiguous along c) and keeps R*J
// vector accumulators, one lane per channel residue, reduced across lanes once at the end.
//
// broadcast form, vectors over output channels (O a multiple of the tile's channel block), any C:
// for the stem (C = 3) and layer1-2's small weights, at any batch (layer2's 3x3 at few pixels). The
// weights are transposed to [K][O] each call (a few hundred KB at most where it is chosen); a
// register tile of R output pixels by B channel vectors broadcasts each input value under each tap
// against B weight vectors. With few input channels (the stem) the input is first copied with its
// padding made explicit, so that a window row is one contiguous run (KW * C floats) and a tap is a
// whole kernel row.
//
// Both can apply eval BatchNorm, a residual and ReLU as they store (ConvEpilogue,
// ops::conv2d_batchnorm), with the bits of the separate batchnorm_apply.
//
// Each output is one fixed sum (dot: lane order, tap by tap, then the lane tree; broadcast: k in
// order), whatever tile or thread it lands in, so the bits depend on the ISA only. Vector code per
// CpuIsa (kernels/cpu/cpu_isa.h): AVX-512 and AVX2, chosen automatically with AVX-512 only (with
// AVX2 the dot form only drew even with OpenBLAS's Haswell kernels); no plain variant.
#include <cstdint>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/conv_geometry.h"

namespace ae::cpu {

// conv_direct_profitable's limits: output pixels (N * OH * OW) for the dot form; output channels
// and weights (floats) for the broadcast form, with a larger weight limit for few pixels.
inline constexpr int64_t kConvDirectMaxPixels = 256;
inline constexpr int64_t kConvBroadcastMaxChannels = 128;
inline constexpr int64_t kConvBroadcastMaxWeights = 96 * 1024;
inline constexpr int64_t kConvBroadcastMaxWeightsFewPixels = 160 * 1024;  // when m <= the next
inline constexpr int64_t kConvBroadcastFewPixels = 1024;

// dot: vectors over input channels (C a multiple of the vector width), for few output pixels and
// long rows. broadcast: vectors over output channels (O a multiple of the tile's channel block: 64
// with AVX-512, 16 with AVX2), any C: each tile's im2col rows are gathered into a buffer of a few
// KB and each input value is broadcast against the weights transposed to [K][O]; for layers with
// few channels in (the stem's C = 3) or small weights.
enum class DirectForm { dot, broadcast };
const char* direct_form_name(DirectForm form);

// The vector ISA can run g in this form: AVX2 or better, channels as above.
bool conv_direct_applicable(const ConvGeometry& g, CpuIsa isa, DirectForm form);
// ...and it is expected to beat im2col + GEMM and Winograd there (measured, conv_direct.cpp).
bool conv_direct_profitable(const ConvGeometry& g, CpuIsa isa, DirectForm form);

// What the forward does to each output as it stores it (ops::conv2d_batchnorm): nothing, or eval
// BatchNorm v = (acc - mean[o]) * scale[o] + beta[o] (scale = gamma * invstd,
// kernels/cpu/batchnorm_apply.h), then v + residual[p, o] when residual is set, then ReLU. These are
// batchnorm_apply's float operations in its order, and conv_direct.cpp is compiled without
// floating-point contraction so that none of them fuses into an FMA: the stored outputs have the
// bits of the convolution followed by cpu::batchnorm_apply, without the second pass over y.
struct ConvEpilogue {
  const float* mean = nullptr;  // null: no BatchNorm (and then no residual or ReLU either)
  const float* scale = nullptr;
  const float* beta = nullptr;
  const float* residual = nullptr;  // [N,OH,OW,O] like y, or null
  bool relu = false;
};

// y [N,OH,OW,O] = conv(x, w), w OHWI, then the epilogue; conv_direct_applicable(g, isa, form) must hold.
void conv_direct_forward(const ConvGeometry& g, const float* x, const float* w, float* y, CpuIsa isa,
                         DirectForm form, const ConvEpilogue& epilogue = {});

}  // namespace ae::cpu

#pragma once
// Direct convolution in dot-product form, for forwards with few output pixels: layer3 and layer4 of
// ResNet-18 at batch 1, where an im2col GEMM has 49-196 rows against weights of up to 4608 x 512.
//
// y[p, o] = sum over taps t and channels c of x[pixel t of p's window, c] * w[o, t, c]. In NHWC with
// OHWI weights both operands are contiguous along c, so a register tile of R output pixels by J
// output channels reads R input runs and J weight runs straight from x and w and keeps R*J vector
// accumulators (one lane per channel residue), reduced across lanes once at the end. Compared with
// im2col + sgemm this writes no column matrix and packs nothing: with so few rows, OpenBLAS spent as
// long packing the weights (read, copy, re-read each call) as multiplying (perf, batch-1 forward:
// sgemm_incopy + sgemm_oncopy 17 % of the cycles against the kernel's 40 %).
//
// Padding taps read a row of zeros. Each output is one fixed sum (lane order, then tap by tap, then
// the lane tree), whatever the tile or thread it lands in, so the bits depend on the ISA only.
// Vector code per CpuIsa (kernels/cpu/cpu_isa.h): AVX-512 and AVX2; no plain variant (the im2col path
// is used there).
#include <cstdint>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/conv_geometry.h"

namespace ae::cpu {

// conv_direct_profitable's limit on output pixels (N * OH * OW).
inline constexpr int64_t kConvDirectMaxPixels = 256;

// The vector ISA can run g: AVX2 or better, channels a multiple of its vector width.
bool conv_direct_applicable(const ConvGeometry& g, CpuIsa isa);
// ...and it is expected to beat im2col + GEMM and Winograd there: AVX-512, few output pixels and a
// long K (measured, conv_direct.cpp).
bool conv_direct_profitable(const ConvGeometry& g, CpuIsa isa);

// y [N,OH,OW,O] = conv(x, w), w OHWI; conv_direct_applicable(g, isa) must hold.
void conv_direct_forward(const ConvGeometry& g, const float* x, const float* w, float* y, CpuIsa isa);

}  // namespace ae::cpu

#pragma once
// The BatchNorm epilogue of the Winograd forward (ops::conv2d_batchnorm on a Winograd geometry,
// kernels/cpu/winograd.h): applied by the output transform to each tile row of outputs as it leaves
// for y, while those outputs are still in L1, instead of a second pass of batchnorm_apply over y.
//
// It lives in a file of its own, winograd_epilogue.cpp, compiled with -ffp-contract=off (CMakeLists.txt)
// so that (x - mean) * scale + beta is never fused into an FMA in its AVX2/AVX-512 variants: the
// bits are cpu::batchnorm_apply's. winograd.cpp itself is compiled with contraction (its transforms'
// multiply-adds are fused in the AVX2/AVX-512 variants; turning that off would change every Winograd
// output's bits), so the formula must not be evaluated there.
#include <cstdint>

#include "kernels/cpu/conv_direct.h"  // ConvEpilogue
#include "kernels/cpu/cpu_isa.h"

namespace ae::cpu {

// y[offset + q * c + j] for q < pixels, j < c (consecutive pixels of one output row, c = O channels):
// v = (y - mean[j]) * scale[j] + beta[j], + residual[offset + q * c + j] when set, ReLU when set, in
// place. ep.mean must be set.
using WinogradEpilogueRows = void (*)(const ConvEpilogue& ep, float* y, int64_t offset, int64_t pixels, int64_t c);
WinogradEpilogueRows winograd_epilogue_rows(CpuIsa isa);

}  // namespace ae::cpu

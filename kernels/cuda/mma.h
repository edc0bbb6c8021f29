#pragma once
// Tensor-core instructions, wrapped. The real build issues the PTX instruction; the emulated
// build computes what the PTX ISA specifies, with the exact per-lane fragment layouts, so a
// kernel that places a fragment element in the wrong register gives a wrong result on the
// emulator exactly as it would on a GPU.
//
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32  (PTX ISA, "Matrix Fragments for mma.m16n8k8"):
//   D[16x8] = A[16x8] * B[8x8] + C[16x8], executed by a whole warp (all 32 lanes).
//   groupID = lane >> 2, tig = lane % 4
//   A (row-major, 4 x .b32 tf32): a0 (g, tig)  a1 (g+8, tig)  a2 (g, tig+4)  a3 (g+8, tig+4)
//   B (col-major, 2 x .b32 tf32): b0 (tig, g)  b1 (tig+4, g)
//   C, D (4 x f32):               c0 (g, 2tig) c1 (g, 2tig+1) c2 (g+8, 2tig) c3 (g+8, 2tig+1)
// Numerics: the hardware reads only the tf32 bits (top 19) of each operand; products are exact in
// f32 and the accumulation order inside the instruction is unspecified. The emulation sums in
// double and rounds once, so results agree with a GPU to within f32 accumulation error.
#include <cstdint>

#include "kernels/cuda/device.h"

namespace ae::cuda {

struct FragCoord {
  int row, col;
};
AE_HOST_DEVICE FragCoord mma_m16n8k8_tf32_a(int lane, int i) {
  return {(lane >> 2) + 8 * (i & 1), (lane & 3) + 4 * (i >> 1)};
}
AE_HOST_DEVICE FragCoord mma_m16n8k8_tf32_b(int lane, int i) { return {(lane & 3) + 4 * i, lane >> 2}; }
AE_HOST_DEVICE FragCoord mma_m16n8k8_c(int lane, int i) { return {(lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)}; }

// cvt.rna.tf32.f32: round to the nearest tf32 value, ties away from zero; returned as the .b32
// register the mma reads (low 13 bits zero).
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(AE_EMULATED_DEVICE)
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7F800000u) == 0x7F800000u) return (u & 0x007FFFFFu) ? 0x7FFFFFFFu & 0xFFFFE000u : u;  // NaN / Inf
  u += 0x1000u;  // half an ulp of tf32 in magnitude: sign-magnitude makes ties go away from zero
  return u & 0xFFFFE000u;
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#endif
}

// d = a * b + c for one m16n8k8 tile; all 32 lanes of the warp must call it together.
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
#if defined(AE_EMULATED_DEVICE)
  struct Fragments {
    uint32_t a[4], b[2];
  };
  Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const int lane = ::ae::emu::this_thread().lane;
  // Gather the whole A and B from the warp, then compute this lane's four D elements.
  float A[16][8], B[8][8];
  ::ae::emu::warp_exchange(kFullMask, mine, [&](auto slot) {
    for (int l = 0; l < kWarp; ++l) {
      const Fragments f = slot(l);
      for (int i = 0; i < 4; ++i) {
        const FragCoord p = mma_m16n8k8_tf32_a(l, i);
        A[p.row][p.col] = __uint_as_float(f.a[i] & 0xFFFFE000u);
      }
      for (int i = 0; i < 2; ++i) {
        const FragCoord p = mma_m16n8k8_tf32_b(l, i);
        B[p.row][p.col] = __uint_as_float(f.b[i] & 0xFFFFE000u);
      }
    }
    return 0;
  });
  for (int i = 0; i < 4; ++i) {
    const FragCoord p = mma_m16n8k8_c(lane, i);
    double acc = c[i];
    for (int k = 0; k < 8; ++k) acc += static_cast<double>(A[p.row][k]) * B[k][p.col];
    d[i] = static_cast<float>(acc);
  }
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

}  // namespace ae::cuda

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
//
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32  (PTX ISA, "Matrix Fragments for mma.m16n8k16
// with floating point type"): D[16x8] = A[16x16] * B[16x8] + C[16x8]. Each .b32 register holds two
// bf16 elements, the lower-numbered one in the low 16 bits.
//   A (row-major, 4 x .b32 = a0..a7): row g for a0,a1,a4,a5 and g+8 for a2,a3,a6,a7;
//                                      col 2tig + (i & 1), plus 8 for a4..a7
//   B (col-major, 2 x .b32 = b0..b3): row 2tig + (i & 1), plus 8 for b2,b3; col g
//   C, D: as for m16n8k8.
// Numerics: bf16 products are exact in f32 (8-bit significands); accumulation as for tf32.
//
// In the word geometry a kernel stages operands in (one .b32 per tf32 element, one per k-adjacent
// bf16 pair), both instructions read the same words: A register r at (row g + 8*(r & 1), word
// tig + 4*(r >> 1)) and B register r at (word tig + 4*r, col g), so one tiled kernel serves both.
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
// Element i (0..7) of A and (0..3) of B of m16n8k16; element i lives in register i / 2, half i % 2.
AE_HOST_DEVICE FragCoord mma_m16n8k16_bf16_a(int lane, int i) {
  return {(lane >> 2) + 8 * ((i >> 1) & 1), 2 * (lane & 3) + (i & 1) + 8 * (i >> 2)};
}
AE_HOST_DEVICE FragCoord mma_m16n8k16_bf16_b(int lane, int i) {
  return {2 * (lane & 3) + (i & 1) + 8 * (i >> 1), lane >> 2};
}

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

// Round to the nearest bfloat16, ties to even (cvt.rn.bf16.f32); NaN becomes the canonical NaN
// 0x7FFF, overflow becomes infinity, subnormals round like any other value (no flush).
AE_HOST_DEVICE uint16_t bf16_bits_rne(uint32_t u) {
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) return 0x7FFFu;
  u += 0x7FFFu + ((u >> 16) & 1u);  // below half an ulp rounds down, above up, exactly half to even
  return static_cast<uint16_t>(u >> 16);
}

// Two floats rounded to bf16 and packed as the .b32 an mma operand register holds: `lo` (the
// lower-numbered element) in bits 0..15, `hi` in bits 16..31.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(AE_EMULATED_DEVICE)
  return static_cast<uint32_t>(bf16_bits_rne(__float_as_uint(lo))) |
         static_cast<uint32_t>(bf16_bits_rne(__float_as_uint(hi))) << 16;
#else
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // first source -> upper half
  return r;
#endif
}

// d = a * b + c for one m16n8k16 bf16 tile; all 32 lanes of the warp must call it together.
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
#if defined(AE_EMULATED_DEVICE)
  struct Fragments {
    uint32_t a[4], b[2];
  };
  Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const int lane = ::ae::emu::this_thread().lane;
  const auto element = [](const uint32_t* regs, int i) {
    return __uint_as_float((regs[i >> 1] >> (16 * (i & 1)) & 0xFFFFu) << 16);
  };
  float A[16][16], B[16][8];
  ::ae::emu::warp_exchange(kFullMask, mine, [&](auto slot) {
    for (int l = 0; l < kWarp; ++l) {
      const Fragments f = slot(l);
      for (int i = 0; i < 8; ++i) {
        const FragCoord p = mma_m16n8k16_bf16_a(l, i);
        A[p.row][p.col] = element(f.a, i);
      }
      for (int i = 0; i < 4; ++i) {
        const FragCoord p = mma_m16n8k16_bf16_b(l, i);
        B[p.row][p.col] = element(f.b, i);
      }
    }
    return 0;
  });
  for (int i = 0; i < 4; ++i) {
    const FragCoord p = mma_m16n8k8_c(lane, i);
    double acc = c[i];
    for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[p.row][k]) * B[k][p.col];
    d[i] = static_cast<float>(acc);
  }
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

}  // namespace ae::cuda

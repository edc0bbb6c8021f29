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
//
// cp.async (PTX ISA, "Data Movement and Conversion Instructions: cp.async", sm_80+):
//   cp.async.cg.shared.global [dst], [src], 16, src-size;   (.cg: cached in L2 only; 16 bytes only)
//   cp.async.ca.shared.global [dst], [src], 4|8, src-size;  (.ca: cached in L1 too)
// copies cp-size bytes from global to shared memory without going through registers, of which the
// first src-size come from src and the rest are written as zeros ("zero-fill": how a kernel loads
// the padding of a convolution or the ragged edge of a tile without a branch around the copy).
// Both addresses must be aligned to cp-size. The copy is asynchronous: it completes, in the issuing
// thread's view, only at a cp.async.wait_group / wait_all covering it; other threads see it after a
// barrier that follows that wait. cp.async.commit_group closes the thread's copies issued since the
// last commit into one group (possibly empty); cp.async.wait_group N waits until at most the N most
// recent groups are outstanding (groups complete in commit order); cp.async.wait_all = commit_group
// + wait_group 0. The emulation (kernels/emu/async_copy.h) writes the data only at the covering
// wait and fills the destination with 0xFF (NaN) bytes from issue until then.
//
// ldmatrix.sync.aligned.m8n8.x{1,2,4}.shared.b16 (PTX ISA, "Warp-level matrix load instruction:
// ldmatrix", sm_75+): loads 1, 2 or 4 matrices of 8 rows x 8 b16 elements (16 contiguous bytes a
// row) from shared memory, warp-wide. Lanes 8j..8j+7 give the row addresses of matrix j (rows 0..7;
// for .x1 / .x2 only lanes 0..7 / 0..15 are used), each 16-byte aligned. Lane l receives, in
// destination register j, the .b32 holding elements 2(l%4), 2(l%4)+1 of row l/4 of matrix j, i.e.
// bytes 4(l%4)..+3 of that row. In the word geometry above that is (row g, word tig) of an
// 8-row x 4-word block: exactly one mma A or B register, for both tf32 (one element per word) and
// bf16 (one k-pair per word). ldmatrix moves bits, so it serves 32-bit data as well.
#include <cstdint>

#include "kernels/cuda/device.h"
#include "runtime/bf16.h"
#if defined(AE_EMULATED_DEVICE)
#include <cstring>

#include "kernels/emu/async_copy.h"
#include "kernels/emu/profile.h"
#include "runtime/error.h"
#endif

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

#if defined(AE_EMULATED_DEVICE)
// One m16n8kK mma as the emulated lane `lane` sees it. Its four D elements lie in rows g and g+8
// and columns 2tig and 2tig+1 (mma_m16n8k8_c), so it needs only those two rows of A, which the
// four lanes of its quad (4g..4g+3) hold, and those two columns of B, which lanes 4c..4c+3 hold
// for c = 2tig, 2tig+1: 8 lanes' fragments instead of the whole warp's. Elements are placed by the
// layout functions above (a_at, b_at), never by a second spelling of the layout; `element(regs, i)`
// reads element i of a fragment. Sums k = 0..K-1 in double from c and rounds once.
template <int K, int kAElems, int kBElems, class ACoord, class BCoord, class Element>
void emulated_mma(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], ACoord a_at, BCoord b_at,
                  Element element) {
  struct Fragments {
    uint32_t a[4], b[2];
  };
  const Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const int lane = ::ae::emu::this_thread().lane, g = lane >> 2, tig = lane & 3;
  float rows[2][K], cols[K][2];  // A rows g, g+8; B columns 2tig, 2tig+1
  ::ae::emu::warp_exchange(kFullMask, mine, [&](auto slot) {
    for (int q = 0; q < 4; ++q) {
      const int l = 4 * g + q;
      const Fragments f = slot(l);
      for (int i = 0; i < kAElems; ++i) {
        const FragCoord p = a_at(l, i);  // row g or g + 8
        rows[p.row >> 3][p.col] = element(f.a, i);
      }
    }
    for (int j = 0; j < 2; ++j) {
      for (int q = 0; q < 4; ++q) {
        const int l = 4 * (2 * tig + j) + q;
        const Fragments f = slot(l);
        for (int i = 0; i < kBElems; ++i) cols[b_at(l, i).row][j] = element(f.b, i);  // column 2tig + j
      }
    }
    return 0;
  });
  for (int i = 0; i < 4; ++i) {
    const FragCoord p = mma_m16n8k8_c(lane, i);
    double acc = c[i];
    for (int k = 0; k < K; ++k) acc += static_cast<double>(rows[p.row >> 3][k]) * cols[k][p.col - 2 * tig];
    d[i] = static_cast<float>(acc);
  }
}
#endif

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
  emulated_mma<8, 4, 2>(
      d, a, b, c, [](int l, int i) { return mma_m16n8k8_tf32_a(l, i); },
      [](int l, int i) { return mma_m16n8k8_tf32_b(l, i); }, [](const uint32_t* regs, int i) { return __uint_as_float(regs[i] & 0xFFFFE000u); });
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
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
  emulated_mma<16, 8, 4>(
      d, a, b, c, [](int l, int i) { return mma_m16n8k16_bf16_a(l, i); },
      [](int l, int i) { return mma_m16n8k16_bf16_b(l, i); },
      [](const uint32_t* regs, int i) { return __uint_as_float((regs[i >> 1] >> (16 * (i & 1)) & 0xFFFFu) << 16); });
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

// ---- cp.async -------------------------------------------------------------------------------

#if !defined(AE_EMULATED_DEVICE)
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#endif

// cp.async.cg.shared.global, 16 bytes: dst (shared) <- src (global), of which the first `src_bytes`
// (0..16) are read and the rest are zeros. With src_bytes == 0 nothing is read, but src must still
// be a valid global address (pass the tensor's base).
__device__ __forceinline__ void cp_async_cg_16(void* dst, const void* src, int src_bytes) {
#if defined(AE_EMULATED_DEVICE)
  ::ae::emu::async_copy_issue(dst, src, 16, src_bytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
#endif
}

// cp.async.ca.shared.global, 4 or 8 bytes (kBytes), with zero-fill as above.
template <int kBytes>
__device__ __forceinline__ void cp_async_ca(void* dst, const void* src, int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8, "cp.async.ca copies 4, 8 or 16 bytes (use cp_async_cg_16 for 16)");
#if defined(AE_EMULATED_DEVICE)
  ::ae::emu::async_copy_issue(dst, src, kBytes, src_bytes);
#else
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared_address(dst)), "l"(src), "n"(kBytes),
               "r"(src_bytes)
               : "memory");
#endif
}

// cp.async.commit_group
__device__ __forceinline__ void cp_async_commit() {
#if defined(AE_EMULATED_DEVICE)
  ::ae::emu::async_copy_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// cp.async.wait_group kPending: this thread's groups except the kPending most recent are complete.
template <int kPending>
__device__ __forceinline__ void cp_async_wait_group() {
  static_assert(kPending >= 0 && kPending <= 7, "cp.async.wait_group: 0..7 pending groups");
#if defined(AE_EMULATED_DEVICE)
  ::ae::emu::async_copy_wait_group(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// cp.async.wait_all: commit_group, then wait for every group.
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(AE_EMULATED_DEVICE)
  ::ae::emu::async_copy_wait_all();
#else
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// ---- ldmatrix -------------------------------------------------------------------------------

// ldmatrix.sync.aligned.m8n8.x{kMatrices}.shared.b16: r[j] = this lane's .b32 of matrix j. `row`
// is the shared address of row (lane % 8) of matrix (lane / 8) (lanes past 8 * kMatrices: ignored,
// but pass a valid address). All 32 lanes must call it together.
template <int kMatrices>
__device__ __forceinline__ void ldmatrix_m8n8_b16(uint32_t (&r)[kMatrices], const void* row) {
  static_assert(kMatrices == 1 || kMatrices == 2 || kMatrices == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(AE_EMULATED_DEVICE)
  const int lane = ::ae::emu::this_thread().lane;
  struct Rows {
    uint32_t v[kMatrices];
  };
  const Rows got = ::ae::emu::warp_exchange(kFullMask, row, [&](auto slot) {
    Rows out{};
    for (int j = 0; j < kMatrices; ++j) {
      const auto* p = static_cast<const unsigned char*>(slot(8 * j + lane / 4));
      AE_CHECK(reinterpret_cast<std::uintptr_t>(p) % 16 == 0,
               "ldmatrix: row address " << static_cast<const void*>(p) << " of matrix " << j << " (lane "
                                        << 8 * j + lane / 4 << ") is not 16-byte aligned");
      ::ae::emu::load_reported(&out.v[j], p + 4 * (lane % 4), 4);  // counted once in every build
    }
    return out;
  });
  for (int j = 0; j < kMatrices; ++j) r[j] = got.v[j];
#else
  if constexpr (kMatrices == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_address(row)));
  } else if constexpr (kMatrices == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(shared_address(row)));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
  }
#endif
}

}  // namespace ae::cuda

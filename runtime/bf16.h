#pragma once
// bfloat16: the upper 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa bits). The one
// definition of the rounding every bf16 path uses: ops::cast to bf16 on both backends and the
// tensor-core kernels' cvt.rn.bf16x2 operand rounding on the emulated device
// (kernels/cuda/mma.h). Because they are one function, a tensor cast to bf16 and then fed to a
// bf16 convolution gives the bits of the f32 tensor fed to the same convolution in bf16 math:
// rounding a bf16 value again leaves it unchanged.
// Compiles as host and device code (nvcc), and with g++ for the emulated device.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define AE_BF16_HD __host__ __device__ __forceinline__
#else
#define AE_BF16_HD inline
#endif

namespace ae {

// The element type of DType::bf16 tensors (Tensor::data<BFloat16>()): raw bits, no arithmetic.
struct BFloat16 {
  uint16_t bits;
};
static_assert(sizeof(BFloat16) == 2, "a bf16 element is two bytes");

// float32 bits -> bf16 bits, round to nearest, ties to even (cvt.rn.bf16.f32): NaN becomes the
// canonical NaN 0x7FFF (sign and payload dropped), a value past the largest bf16 becomes
// infinity, subnormals round like any other value (no flush to zero).
AE_BF16_HD uint16_t bf16_bits_rne(uint32_t u) {
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) return 0x7FFFu;
  u += 0x7FFFu + ((u >> 16) & 1u);  // below half an ulp rounds down, above up, exactly half to even
  return static_cast<uint16_t>(u >> 16);
}

// bf16 bits -> float32 bits: exact (every bf16 is a float32).
AE_BF16_HD uint32_t f32_bits_of_bf16(uint16_t b) { return static_cast<uint32_t>(b) << 16; }

AE_BF16_HD float bf16_to_float(uint16_t b) {
  const uint32_t u = f32_bits_of_bf16(b);
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

AE_BF16_HD uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return bf16_bits_rne(u);
}

// Element access for loops and kernels templated on the storage type (float or BFloat16): values
// are float32 in registers whatever the storage; a bf16 store rounds once, as ops::cast does.
AE_BF16_HD float load_as_float(const float* p, int64_t i) { return p[i]; }
AE_BF16_HD float load_as_float(const BFloat16* p, int64_t i) { return bf16_to_float(p[i].bits); }
AE_BF16_HD void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
AE_BF16_HD void store_from_float(BFloat16* p, int64_t i, float v) { p[i].bits = float_to_bf16(v); }

}  // namespace ae

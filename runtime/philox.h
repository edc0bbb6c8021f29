#pragma once
// Counter-based RNG (Philox-4x32-10, Salmon et al. 2011). A number is a pure function of
// (seed, counter), so the CPU and the CUDA kernels draw exactly the same stream for the same
// seed and offset, in any order and on any number of threads. Compiles as host and device code.
#include <cstdint>

#if defined(__CUDACC__)
#define AE_HD __host__ __device__ __forceinline__
#else
#define AE_HD inline
#endif

namespace ae::philox {

struct U32x4 {
  uint32_t v[4];
};

AE_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox-4x32 with 10 rounds; counter (c0..c3), key (k0, k1).
AE_HD U32x4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    const uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// The i-th 32-bit word of the stream (seed, offset): block (offset + i) / 4, lane (offset + i) % 4.
AE_HD uint32_t u32(uint64_t seed, uint64_t index) {
  const uint64_t block = index >> 2;
  const U32x4 r = philox4x32(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u,
                             static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[index & 3u];
}

// Uniform float in [0, 1) with 24 random bits: exactly representable, identical on every device.
AE_HD float uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(u32(seed, index) >> 8) * (1.0f / 16777216.0f);
}

}  // namespace ae::philox

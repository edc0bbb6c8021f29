#pragma once
// The CUDA dialect as g++ sees it on the emulated device. Kernel sources (kernels/cuda/*.cu)
// include kernels/cuda/device.h, which includes this header when AE_EMULATED_DEVICE is defined,
// so the very same lines of kernel code compile with nvcc for a GPU and with g++ for the CPU.
//
// What is provided: the qualifiers (__global__, __device__, ...), threadIdx/blockIdx/blockDim/
// gridDim, __syncthreads, __syncwarp, warp shuffles and votes, atomics, and the math intrinsics
// our kernels use. What is deliberately missing: __shared__ (use AE_SHARED from device.h, which
// gives each block its own poisoned copy) and <<<>>> (use AE_LAUNCH).
#include <math.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/emu/scheduler.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A raw __shared__ declaration would be one array for the whole grid: refuse it at compile time.
#define __shared__ use_AE_SHARED_from_kernels_cuda_device_h_instead_of___shared__

using ae::emu::dim3;
using ae::emu::uint3;

#define threadIdx (::ae::emu::this_thread().thread_idx)
#define blockIdx (::ae::emu::this_block().block_idx)
#define blockDim (::ae::emu::this_block().block_dim)
#define gridDim (::ae::emu::this_block().grid_dim)
#define warpSize (::ae::emu::kWarpSize)

inline void __syncthreads() { ::ae::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) { ::ae::emu::sync_warp(mask); }
inline void __threadfence() {}
inline void __threadfence_block() {}

namespace ae::emu {

// One warp-wide exchange: every lane of mask publishes `mine`; read(slot_of) runs once every lane
// has published (scheduler.h, warp_exchange_slots, says when the slots may be reused).
template <typename T, typename Read>
auto warp_exchange(unsigned mask, const T& mine, Read read) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kWarpSlotBytes, "value too large for a warp slot");
  const ExchangeSlots ex = warp_exchange_slots(mask);
  unsigned char* const slots = ex.bytes;
  const int lane = this_thread().lane;
  std::memcpy(slots + static_cast<std::size_t>(lane) * kWarpSlotBytes, &mine, sizeof(T));
  sync_warp(mask);
  auto slot = [slots](int l) {
    T v;
    std::memcpy(&v, slots + static_cast<std::size_t>(l) * kWarpSlotBytes, sizeof(T));
    return v;
  };
  auto result = read(slot);
  if (ex.reuse_sync) sync_warp(mask);
  return result;
}

// CUDA's rule for every shuffle: the source lane is computed within segments of `width` lanes.
template <typename T>
T shfl_from(unsigned mask, T v, int lane_delta_kind, int arg, int width) {
  const int lane = this_thread().lane;
  const int base = lane & ~(width - 1);
  int src = lane;
  switch (lane_delta_kind) {
    case 0: src = base + (arg & (width - 1)); break;                                   // __shfl_sync
    case 1: src = (lane - base) + arg < width ? lane + arg : lane; break;             // __shfl_down_sync
    case 2: src = (lane - base) >= arg ? lane - arg : lane; break;                    // __shfl_up_sync
    case 3: src = (lane ^ arg) < base + width ? lane ^ arg : lane; break;             // __shfl_xor_sync
  }
  return warp_exchange(mask, v, [src](auto slot) { return slot(src); });
}

}  // namespace ae::emu

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::ae::emu::shfl_from(mask, v, 0, src_lane, width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::ae::emu::shfl_from(mask, v, 1, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::ae::emu::shfl_from(mask, v, 2, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::ae::emu::shfl_from(mask, v, 3, lane_mask, width);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::ae::emu::warp_exchange(mask, predicate, [mask](auto slot) {
    unsigned bits = 0;
    for (int l = 0; l < 32; ++l) {
      if ((mask >> l & 1u) && slot(l) != 0) bits |= 1u << l;
    }
    return bits;
  });
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// Atomics: fibers of the emulated device never switch inside a device function, so a plain
// read-modify-write is atomic here. The profile mode (kernels/emu/profile.h) may switch a thread
// out at an instrumented load, so the atomics are kept out of its instrumentation: they are never
// split, and are not counted in the profile.
// (AE_EMU_PROFILE_INSTRUMENTED is defined exactly for the sources compiled with that
// instrumentation; a real AddressSanitizer build keeps checking the atomics.)
#if defined(AE_EMU_PROFILE_INSTRUMENTED)
#define AE_EMU_NOT_PROFILED __attribute__((no_sanitize_address))
#else
#define AE_EMU_NOT_PROFILED
#endif
template <typename T>
AE_EMU_NOT_PROFILED inline T ae_emu_atomic_rmw(T* address, T value, T (*op)(T, T)) {
  const T old = *address;
  *address = op(old, value);
  return old;
}
inline int atomicAdd(int* a, int v) { return ae_emu_atomic_rmw<int>(a, v, [](int x, int y) { return x + y; }); }
inline unsigned atomicAdd(unsigned* a, unsigned v) {
  return ae_emu_atomic_rmw<unsigned>(a, v, [](unsigned x, unsigned y) { return x + y; });
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return ae_emu_atomic_rmw<unsigned long long>(a, v, [](unsigned long long x, unsigned long long y) { return x + y; });
}
inline float atomicAdd(float* a, float v) { return ae_emu_atomic_rmw<float>(a, v, [](float x, float y) { return x + y; }); }
inline int atomicMax(int* a, int v) { return ae_emu_atomic_rmw<int>(a, v, [](int x, int y) { return x > y ? x : y; }); }
inline int atomicMin(int* a, int v) { return ae_emu_atomic_rmw<int>(a, v, [](int x, int y) { return x < y ? x : y; }); }
inline int atomicExch(int* a, int v) { return ae_emu_atomic_rmw<int>(a, v, [](int, int y) { return y; }); }
AE_EMU_NOT_PROFILED inline int atomicCAS(int* a, int compare, int v) {
  const int old = *a;
  if (old == compare) *a = v;
  return old;
}

// Math intrinsics with their IEEE meaning (the fast GPU versions differ in the last bits;
// tests use tolerances that cover both).
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

#pragma once
// The emulated device's execution engine: runs a kernel's grid block by block on the calling CPU
// thread, each block's threads as fibers (ucontext), with CUDA's synchronisation semantics.
//
// Why fibers: a CUDA thread can stop in the middle of its code at __syncthreads() or at a warp
// exchange and resume later, so every emulated thread needs its own stack. Between two
// synchronisation points the fibers of a block run one after another in an order drawn from a
// seeded RNG (AE_EMU_SEED, or set_seed()), so a kernel that forgets a barrier reads poisoned or
// stale shared memory in some order and fails its test instead of passing by luck.
// Shared memory is poisoned with 0xFF bytes (a NaN pattern for floats) at the start of every block.
// When profiling (kernels/emu/profile.h) the scheduler also reports fiber switches, barriers and
// thread exits to the profiler (profile_hooks.h), which groups the lanes' accesses into warp-level ones.
#include <cstddef>
#include <cstdint>
#include <functional>

namespace ae::emu {

// CUDA's vector types as the emulated kernels see them (threadIdx is a uint3, blockDim a dim3).
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

constexpr int kWarpSize = 32;
// Bytes each lane may publish in one warp exchange (an mma fragment set fits).
constexpr std::size_t kWarpSlotBytes = 64;
// Limits of the devices we build for (sm_80 is the smaller): 48 KiB of static shared memory and
// 163 KiB per block in total after opting in.
constexpr std::size_t kMaxStaticShared = 48 * 1024;
constexpr std::size_t kMaxSharedPerBlock = 163 * 1024;

struct ThreadState {
  uint3 thread_idx;
  int linear;  // x + y*Dx + z*Dx*Dy: the order threads are grouped into warps
  int lane;
  int warp;
};
struct BlockState {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// Valid only inside a running emulated kernel.
const ThreadState& this_thread();
const BlockState& this_block();

void sync_block();               // __syncthreads()
void sync_warp(unsigned mask);   // __syncwarp(mask): every lane of mask must arrive
// This warp's slots for one exchange among the lanes of `mask`: kWarpSize slots of
// kWarpSlotBytes. A lane writes its own slot, sync_warp(mask), reads others, and then, only if
// `reuse_sync`, sync_warp(mask) again before the slots may be reused. When mask is every lane the
// warp has, its exchanges alternate between two banks and need no second sync: a lane that writes
// exchange n's bank has passed exchange n-1's sync, which every lane reached only after reading
// exchange n-2's (the same bank). Every lane takes part in every such exchange, so the lanes agree
// on n. Any other mask uses a third bank and syncs twice. (Half the fiber switches of an emulated
// mma, shuffle or ldmatrix.)
struct ExchangeSlots {
  unsigned char* bytes;
  bool reuse_sync;
};
ExchangeSlots warp_exchange_slots(unsigned mask);
// Lanes of this thread's warp that exist in the block (a partial last warp has fewer than 32).
unsigned warp_existing_lanes();

// Static __shared__ arrays: one per declaration site (key) per block, 16-byte aligned.
void* static_shared(const void* key, std::size_t bytes);
void* dynamic_shared();
std::size_t dynamic_shared_bytes();

// Runs body once per thread of every block of the grid. Throws ae::Error (naming the kernel,
// block and thread) for deadlocks, bad warp masks or exhausted shared memory.
void run_kernel(const char* name, dim3 grid, dim3 block, std::size_t dynamic_shared_bytes,
                const std::function<void()>& body);

// Scheduling seed: AE_EMU_SEED from the environment (default 1) until set_seed() is called.
void set_seed(uint64_t seed);
uint64_t seed();

}  // namespace ae::emu

#pragma once
// What the fiber scheduler (scheduler.cpp) tells the profiler (profile.cpp) and what the profiler
// asks of the scheduler. Internal to kernels/emu; kernels use kernels/emu/profile.h.
//
// The scheduler calls these only for a launch that launch_begin() accepted, so a launch that is
// not profiled pays one branch per fiber switch and nothing per memory access.
#include <cstddef>

namespace ae::emu::profile_detail {

// Memory of the running block that kernel code may touch but that is not device memory: the
// scheduler's own per-block state (thread indices, warp exchange slots) and the fiber stacks.
struct BlockMemory {
  const unsigned char* shared;  // the block's shared memory (static and dynamic)
  std::size_t shared_bytes;
  const void* fibers;
  std::size_t fibers_bytes;
  const void* warp_slots;
  std::size_t warp_slots_bytes;
  const void* stacks;
  std::size_t stacks_bytes;
};

// True when this launch is profiled; the calling thread records until launch_end().
bool launch_begin(const char* kernel, unsigned threads_per_block);
void block_begin(const BlockMemory& memory);
void switch_to(int thread);                // the scheduler resumes this thread of the block
void thread_exited(int thread);
void warp_synced(int warp, unsigned mask);  // a __syncwarp(mask) / warp exchange was released
void block_synced();                        // a __syncthreads was released
void block_end();
// Merges the launch into the per-kernel totals (completed) or drops it (a kernel that threw).
void launch_end(bool completed);

}  // namespace ae::emu::profile_detail

namespace ae::emu {
// Implemented by the scheduler: switches the running thread out and leaves it ready, as if the
// hardware had scheduled another warp. Legal anywhere between barriers; the profiler uses it only
// at a load (never inside an atomic, which is not instrumented) to bound its pending records.
void preempt_current_thread();
}  // namespace ae::emu

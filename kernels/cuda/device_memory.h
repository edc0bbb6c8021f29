#pragma once
// Device memory for tensors: a caching allocator (cudaMalloc is slow and synchronising, and a
// training step frees and reallocates the same sizes every iteration) with an optional checked
// mode used by the GPU tests: every allocation gets red zones before and after it, its payload is
// poisoned with 0xFF bytes (NaN for f32), and check_guard_bytes() verifies every red zone, so a
// kernel that writes out of bounds or leaves part of its output unwritten fails its test.
#include <cstddef>
#include <cstdint>

namespace ae::cuda {

void* device_alloc(std::size_t bytes);  // throws ae::Error when the device is out of memory
void device_free(void* p) noexcept;
void device_copy(void* dst, const void* src, std::size_t bytes);  // any direction

// Checked mode applies to allocations made after it is switched on.
void set_guard_bytes(bool on);
bool guard_bytes_enabled();
// Throws ae::Error naming the allocation size and the first bad offset when any red zone (of a
// live block or one freed since the last check) was overwritten.
void check_guard_bytes();

struct MemoryStats {
  std::size_t in_use = 0;  // bytes handed out to tensors
  std::size_t cached = 0;  // bytes held for reuse (the general cache)
  std::size_t graph_pools = 0;  // free bytes held in graph-private pools (see below)
  std::size_t deferred = 0;     // freed bytes held back from reuse while a graph may still use them
  std::size_t peak = 0;
  uint64_t cache_hits = 0;    // allocations served from the cache
  uint64_t cache_misses = 0;  // allocations that needed a new raw device block
};
MemoryStats memory_stats();
// Frees the general cache (refused during a graph capture; graph pools and deferred blocks stay).
void release_cached_memory();
// Restarts the peak at the bytes in use now (to measure the peak of one phase).
void reset_peak_memory();

// Graph-private memory pools (kernels/cuda/graph.h, "Memory"). A pool is created for a capture;
// while set for a thread, that thread's allocations come from it, and its blocks, when freed, go
// back to it (not to the general cache) as long as the pool is alive. From begin_pool_capture()
// until release_graph_pool(), general blocks allocated before the capture last started or ended and
// freed meanwhile are deferred: held back from reuse, since the graph may hold their addresses.
uint64_t create_graph_pool();
void set_thread_allocation_pool(uint64_t pool);  // 0: the general cache
uint64_t thread_allocation_pool();
// Call at the start and at the end of a capture into `pool`: every block allocated up to now may be
// referenced by the graph.
void pin_blocks_for_graph(uint64_t pool);
// The graph is gone: its free blocks go to the general cache, its live blocks become ordinary ones
// (back to the general cache when freed), and deferred blocks that no live graph can reference
// become reusable.
void release_graph_pool(uint64_t pool);
// Bytes of the pool's blocks, live and free.
std::size_t graph_pool_bytes(uint64_t pool);

}  // namespace ae::cuda

#pragma once
// Small kernels that exercise the cp.async and ldmatrix wrappers of kernels/cuda/mma.h, built for
// the emulated device and for real GPUs from the same source (async_copy_kernels.cu), for
// test_cuda_async_copy.cpp. Host functions take and return host vectors.
#include <cstdint>
#include <vector>

namespace ae::gputest {

// One warp: `words` (at most 256 .b32) are stored to shared memory, then lane l passes the address
// of word row_words[l] (a multiple of 4: 16-byte aligned) as its row address to ldmatrix
// .x{matrices}. Returns out[lane * matrices + j] = register j of lane.
std::vector<uint32_t> ldmatrix_words(const std::vector<uint32_t>& words, const std::vector<int>& row_words,
                                     int matrices);

// What one thread of a cp.async kernel saw, as float bit patterns of its 4-word destination.
struct CopySnapshots {
  std::vector<uint32_t> before_wait;   // [thread][4]: right after issue (emulator: 0xFFFFFFFF poison)
  std::vector<uint32_t> after_wait;    // [thread][4]: after wait_group 0 (or wait_all)
};

// `threads` threads; thread t issues one copy of 16 bytes (cp.async.cg) from src + 4t words with
// src-size src_bytes[t] (0..16), commits, snapshots its destination, waits (wait_all when
// use_wait_all, else wait_group 0) and snapshots again. src has 4 * threads words.
CopySnapshots cp_async_16(const std::vector<uint32_t>& src, const std::vector<int>& src_bytes, bool use_wait_all);

// The same with cp.async.ca of kBytes = 4 or 8 per thread (bytes), src-size src_bytes[t].
CopySnapshots cp_async_ca(const std::vector<uint32_t>& src, const std::vector<int>& src_bytes, int bytes);

// One warp; each thread issues three groups of one 16-byte copy each (g0, g1, g2 to three
// destinations), and one more copy it does not commit; then, in turn, wait_group 2, 1, 0 and
// wait_all, snapshotting all four destinations after each. Returns, per thread, 4 waits x 4
// destinations x 4 words, then (emulator only; -1 on a GPU) the outstanding group count the
// emulation reports after each wait: [thread][4 waits].
struct GroupSnapshots {
  std::vector<uint32_t> words;   // [thread][wait][destination][word]
  std::vector<int> outstanding;  // [thread][wait]
};
GroupSnapshots cp_async_groups(const std::vector<uint32_t>& src);

// `threads` threads; thread t copies chunk t, commits, then either waits and passes a barrier
// (correct) or only passes the barrier (the bug: no wait), and reads chunk (t + 1) % threads.
// Returns the words read, [thread][4].
std::vector<uint32_t> cp_async_neighbour_read(const std::vector<uint32_t>& src, int threads, bool wait);

// `blocks` blocks of 32 threads; every thread issues one copy, commits, and exits without waiting
// (the bug the emulator reports: a thread ending with copies outstanding). Runs the kernel.
void cp_async_exit_without_wait(int blocks);

}  // namespace ae::gputest

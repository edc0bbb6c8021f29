#pragma once
// The emulated device's asynchronous copies (cp.async, PTX ISA "Data Movement and Conversion
// Instructions: cp.async"), as the wrappers of kernels/cuda/mma.h issue them.
//
// What the hardware guarantees, and therefore all a kernel may rely on: the data of a cp.async is
// in shared memory once the issuing thread has executed a cp.async.wait_group that covers the
// copy's group (or wait_all), and it is visible to the other threads of the block only after a
// barrier that follows that wait. Until then the destination holds anything. The emulation makes
// "anything" as hostile as possible:
//   - at issue, the source bytes are captured (src-size of them; the rest of the copy is the
//     zero-fill), and the destination is filled with 0xFF bytes, a NaN for every float, so a thread
//     reading it before the wait (its own copy without wait_group, or another thread's copy without
//     the barrier) computes NaN and fails its test;
//   - the captured bytes are written to shared memory only when the issuing thread's wait_group N
//     leaves at most N of its committed groups outstanding (the oldest ones complete first, as the
//     ISA specifies groups complete in commit order);
//   - copies issued but never committed are not waited for by wait_group (they belong to no group
//     yet); wait_all commits them first, as the ISA defines it.
// State is per emulated thread, keyed by (block index, thread linear index), on the calling OS
// thread (the scheduler runs a grid's blocks one after another on one OS thread). A thread that ends
// with copies outstanding is a kernel bug (their data would be lost or land after the block ended):
// without a scheduler hook at thread exit this is detected when the next block (or launch) on the
// same OS thread first issues a cp.async, and on demand by async_copy_take_leaks() (tests call it
// after a launch).
#include <cstddef>
#include <string>

namespace ae::emu {

// cp.async of `bytes` (4, 8 or 16) from global `src` to shared `dst`, of which the first
// `src_bytes` (0..bytes) come from src and the rest are zeros. src is not read when src_bytes is 0.
void async_copy_issue(void* dst, const void* src, int bytes, int src_bytes);
// cp.async.commit_group: the copies issued since the last commit become one group (possibly empty).
void async_copy_commit();
// cp.async.wait_group n: completes the oldest groups until at most n remain outstanding. n must be
// 0..7 (the kernels' constants; a larger n is reported as a kernel bug: it would never wait).
void async_copy_wait_group(int n);
// cp.async.wait_all: commit, then wait_group 0.
void async_copy_wait_all();

// This thread's committed groups not yet completed, and its issued-but-uncommitted copies.
int async_copy_outstanding_groups();
int async_copy_uncommitted();

// Counters since the process started (or the last reset), for tests: copies issued, copies
// completed by a wait, groups committed.
struct AsyncCopyStats {
  std::size_t issued = 0, completed = 0, groups = 0;
};
AsyncCopyStats async_copy_stats();

// Host side, between launches: a description of every emulated thread (block, thread, copies)
// that still has copies outstanding, which is then forgotten; empty when there is none.
std::string async_copy_take_leaks();

}  // namespace ae::emu

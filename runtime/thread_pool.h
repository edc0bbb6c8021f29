#pragma once
// The project's CPU thread pool: split a loop over independent rows across a few threads that
// sleep between bursts of calls. Every parallel loop of the CPU backend (GEMM bands included,
// kernels/cpu/gemm.h) and of image preprocessing uses it.
//
// Why not OpenMP: a training step alternates memory-bound passes (im2col, BN, ReLU, pooling...)
// with GEMMs, hundreds of times per step. With libgomp for the passes and OpenBLAS's own threads
// for the GEMMs, each pool's workers spun (libgomp) or sched_yield-ed (OpenBLAS) while the other
// pool needed the cores: measured 3-20x slower convolutions and ~30% of a training step's cycles
// in spin loops. One pool runs everything instead. Its workers poll for the next job for a short,
// bounded time (thread_pool.cpp: spin_budget; nothing else of ours wants the core meanwhile), then
// block on a condition variable, so an idle process costs nothing. OMP_WAIT_POLICY=passive skips
// the polling (more threads than cores, e.g. several ranks on one small machine).
//
// Partitions never decide results: callers either write disjoint outputs per row or reduce
// over fixed blocks (kernels/cpu/channel_reduce.h), so any thread count gives the same bits.
#include <cstdint>
#include <functional>

namespace ae {

// Threads parallel_rows uses, the caller included. Starts as OMP_NUM_THREADS when that is a
// positive number (the variable OpenBLAS follows too), otherwise the hardware thread count.
int thread_count();

// Sets thread_count() for later calls, from any thread (tests compare results across thread
// counts). Workers are started on first use and never stopped. Throws ae::Error unless
// 1 <= threads <= kMaxThreads.
inline constexpr int kMaxThreads = 256;
void set_thread_count(int threads);

// Calls body(begin, end) on disjoint contiguous parts covering [0, count), in parallel when
// count >= 2 * min_rows_per_thread, and returns when all parts are done. Parts hold at least
// min_rows_per_thread rows; there are a few per thread, claimed by whichever thread is free (the
// caller included), on at most thread_count() threads. Which thread runs which part, and how
// many parts there are, must not matter to the result. body must not throw. Calls from several
// threads at once are safe: one runs in parallel, the others inline (so nested calls run inline).
void parallel_rows(int64_t count, int64_t min_rows_per_thread, const std::function<void(int64_t, int64_t)>& body);

}  // namespace ae

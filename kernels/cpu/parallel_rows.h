#pragma once
// parallel_rows: split a loop over independent rows across a few threads that SLEEP between calls.
//
// Why not OpenMP here: the convolution alternates a memory-bound copy (im2col/col2im) with an
// OpenBLAS GEMM, many times per call. libgomp's workers spin for milliseconds after each parallel
// region (and OpenBLAS's own pthread workers spin after each GEMM), so on a 2-core machine the two
// pools steal each other's cores: measured 3-20x slower convolutions. These workers block on a
// condition variable instead, costing a wake-up (microseconds) per call and nothing afterwards.
#include <cstdint>
#include <functional>

namespace ae::cpu {

// Calls body(begin, end) on disjoint contiguous parts covering [0, count), in parallel when
// count >= 2 * min_rows_per_thread, and returns when all parts are done. The thread count is
// omp_get_max_threads() (so OMP_NUM_THREADS applies), the caller being one of them. body must not
// throw. Calls from several threads at once are safe: one runs in parallel, the others inline.
void parallel_rows(int64_t count, int64_t min_rows_per_thread, const std::function<void(int64_t, int64_t)>& body);

}  // namespace ae::cpu

#pragma once
// Loop helpers over the runtime's sleeping thread pool (runtime/thread_pool.h) for the CPU ops.
// Each index writes only its own outputs, so how the range is split never changes the bits.
#include <algorithm>
#include <cstdint>

#include "runtime/thread_pool.h"

namespace ae::cpu {

// A thread must get at least this many elements of a memory-bound pass: below it, waking a
// worker (a few microseconds) costs more than the work it takes over.
inline constexpr int64_t kMinElementsPerThread = 16384;

// Rows per thread for rows of `row_elements` elements each.
inline int64_t min_rows_for(int64_t row_elements) {
  return std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(1, row_elements));
}

// f(i) for every i in [0, n), split across threads when n is large enough. `cost` scales the
// work per element (a compute-bound loop passes more than 1 and splits sooner).
template <typename F>
void parallel_elements(int64_t n, F&& f, int64_t cost = 1) {
  parallel_rows(n, std::max<int64_t>(1, kMinElementsPerThread / cost), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

}  // namespace ae::cpu

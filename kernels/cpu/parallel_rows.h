#pragma once
// parallel_rows moved to the runtime's thread pool (runtime/thread_pool.h, which explains why
// the CPU kernels use sleeping workers rather than OpenMP); this name keeps callers compiling.
#include "runtime/thread_pool.h"

namespace ae::cpu {

using ae::parallel_rows;

}  // namespace ae::cpu

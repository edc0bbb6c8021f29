#pragma once
// The one entry point of every CPU GEMM (convolutions, Winograd, linear layers): row-major
//   C[m, n] = op(A)[m, k] * op(B)[k, n] + beta * C
// with op(A) = A^T when a_trans (A stored [k, m]) and op(B) = B^T when b_trans (B stored [n, k]).
//
// Threads: by default OpenBLAS runs single-threaded and each GEMM is split into row or column
// bands over the project's sleeping thread pool (runtime/thread_pool.h), one single-threaded
// sgemm per band. OpenBLAS's own pthread workers spin in sched_yield after every call; on a
// 2-core machine they took the core our pool needed for the transforms and element-wise passes
// in between (a quarter of the cycles of a batch-1 forward were in sched_yield, measured with
// perf; bench/RESULTS.md "GEMM threads"). AE_CPU_GEMM=openblas restores OpenBLAS's threading,
// for comparison. Either way each element of C is one dot product over the whole of K, computed
// by OpenBLAS's kernel, so the split does not change which products are summed.
#include <cstdint>
#include <string>

namespace ae::cpu {

// "OpenBLAS, SkylakeX kernels, ...": the library, the kernel set OpenBLAS chose for this CPU (or
// that OPENBLAS_CORETYPE forces) and the threading, for benchmark output.
std::string blas_info();

enum class GemmThreads { bands, openblas };
GemmThreads gemm_threads();  // AE_CPU_GEMM (bands | openblas), read once; default bands

void sgemm(const char* op, bool a_trans, bool b_trans, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The same product on the calling thread only (a caller that is already parallel, e.g. over the
// independent GEMMs of a Winograd transform).
void sgemm_serial(const char* op, bool a_trans, bool b_trans, int64_t m, int64_t n, int64_t k, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace ae::cpu

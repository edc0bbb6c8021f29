#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace ae::cpu {
namespace {

int blas_dim(const char* op, int64_t v) {
  AE_CHECK(v <= INT_MAX, op << ": GEMM dimension " << v << " exceeds OpenBLAS's 32-bit index range");
  return static_cast<int>(v);
}

void call_blas(const char* op, bool a_trans, bool b_trans, int64_t m, int64_t n, int64_t k, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, a_trans ? CblasTrans : CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans,
              blas_dim(op, m), blas_dim(op, n), blas_dim(op, k), 1.0f, a, blas_dim(op, lda), b, blas_dim(op, ldb),
              beta, c, blas_dim(op, ldc));
}

// Bands are whole multiples of this many rows or columns (OpenBLAS's micro-kernels work on
// 16-wide panels with AVX-512), one band per thread, and each band gets at least kMinBandMacs
// multiply-adds: below that, waking a worker costs more than the band.
constexpr int64_t kBandQuantum = 16;
constexpr int64_t kMinBandMacs = int64_t{1} << 19;

}  // namespace

std::string blas_info() {
  const char* core = openblas_get_corename();
  return std::string("OpenBLAS, ") + (core != nullptr ? core : "?") + " kernels, " +
         (gemm_threads() == GemmThreads::bands ? "single-threaded calls in bands over the thread pool"
                                               : "OpenBLAS's own threads");
}

GemmThreads gemm_threads() {
  static const GemmThreads chosen = [] {
    GemmThreads t = GemmThreads::bands;
    if (const char* env = std::getenv("AE_CPU_GEMM"); env != nullptr && *env != '\0') {
      const std::string s = env;
      AE_CHECK(s == "bands" || s == "openblas", "AE_CPU_GEMM: unknown value '" << s << "' (expected bands or openblas)");
      t = s == "bands" ? GemmThreads::bands : GemmThreads::openblas;
    }
    // OpenBLAS's thread count is process-wide: single-threaded from the first GEMM on.
    if (t == GemmThreads::bands) openblas_set_num_threads(1);
    return t;
  }();
  return chosen;
}

void sgemm_serial(const char* op, bool a_trans, bool b_trans, int64_t m, int64_t n, int64_t k, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  (void)gemm_threads();  // OpenBLAS is single-threaded before the first call
  call_blas(op, a_trans, b_trans, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

void sgemm(const char* op, bool a_trans, bool b_trans, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (const int64_t v : {m, n, k, lda, ldb, ldc}) (void)blas_dim(op, v);  // the bands below must not throw
  if (gemm_threads() == GemmThreads::openblas || m == 0 || n == 0) {
    call_blas(op, a_trans, b_trans, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of C: each band then re-packs only the other operand's smaller panel.
  // The bands are fixed by the shape and thread_count() alone, never by which threads happen to
  // run them (parallel_rows runs inline when the pool is busy), so a product has the same bits on
  // every run: OpenBLAS's rounding depends on the shape of each call.
  const bool split_rows = m >= n;
  const int64_t along = split_rows ? m : n, across = split_rows ? n : m;
  const int64_t units = (along + kBandQuantum - 1) / kBandQuantum;
  const int64_t unit_macs = kBandQuantum * across * std::max<int64_t>(k, 1);
  const int64_t max_bands = std::max<int64_t>(1, units * unit_macs / kMinBandMacs);
  const int64_t bands = std::min<int64_t>({static_cast<int64_t>(thread_count()), units, max_bands});
  if (bands <= 1) {
    call_blas(op, a_trans, b_trans, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  parallel_rows(bands, 1, [&](int64_t band_begin, int64_t band_end) {
    for (int64_t band = band_begin; band < band_end; ++band) {
      const int64_t first = units * band / bands * kBandQuantum;
      const int64_t count = std::min(units * (band + 1) / bands * kBandQuantum, along) - first;
      if (split_rows) {  // rows [first, first + count) of op(A) and C
        const float* a_band = a_trans ? a + first : a + first * lda;
        call_blas(op, a_trans, b_trans, count, n, k, a_band, lda, b, ldb, beta, c + first * ldc, ldc);
      } else {  // columns [first, first + count) of op(B) and C
        const float* b_band = b_trans ? b + first * ldb : b + first;
        call_blas(op, a_trans, b_trans, m, count, k, a, lda, b_band, ldb, beta, c + first, ldc);
      }
    }
  });
}

}  // namespace ae::cpu

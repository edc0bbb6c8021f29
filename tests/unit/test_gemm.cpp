// kernels/cpu/gemm.h: the one CPU GEMM entry point. Band threading over the thread pool, for every
// transpose combination, strides larger than the matrix, beta 0 and 1, and shapes that do and do
// not split: the same bits whether the bands run in parallel or inline (a busy pool), padding never
// written, and close to a double-precision loop. (Not the bits of one unsplit call: OpenBLAS's
// rounding depends on the shape of each call.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "runtime/thread_pool.h"
#include "tests/support/random_block.h"

using namespace ae;

namespace {

struct Case {
  int64_t m, n, k;
  bool a_trans, b_trans;
  int64_t pad;  // extra elements per row of every operand (lda > minimal)
  float beta;
};

std::vector<float> random_values(std::size_t n, uint64_t seed) {
  const Tensor t = test::random_tensor({static_cast<int64_t>(n)}, seed, -1.0f, 1.0f);
  return std::vector<float>(t.f32(), t.f32() + n);
}

}  // namespace

TEST_CASE("sgemm in bands: the same bits in parallel and inline, and a double loop's result") {
  const Case cases[] = {
      {1, 1, 1, false, false, 0, 0.0f},      {3, 5, 7, false, true, 2, 0.0f},     {512, 2304, 196, true, false, 0, 1.0f},
      {196, 512, 2304, false, true, 3, 0.0f}, {49, 512, 4608, false, true, 0, 0.0f}, {3136, 64, 576, false, true, 1, 1.0f},
      {64, 576, 3136, true, false, 0, 0.0f},  {785, 17, 33, true, true, 5, 1.0f},   {17, 785, 33, false, false, 0, 0.0f},
      {100, 300, 0, false, false, 0, 1.0f},
  };
  uint64_t seed = 1;
  for (const int threads : {2, 3}) {
    set_thread_count(threads);
    for (const Case& c : cases) {
      const int64_t a_rows = c.a_trans ? c.k : c.m, a_cols = c.a_trans ? c.m : c.k;
      const int64_t b_rows = c.b_trans ? c.n : c.k, b_cols = c.b_trans ? c.k : c.n;
      const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.n + c.pad;
      const std::vector<float> a = random_values(static_cast<std::size_t>(a_rows * lda), seed++);
      const std::vector<float> b = random_values(static_cast<std::size_t>(b_rows * ldb), seed++);
      const std::vector<float> c0 = random_values(static_cast<std::size_t>(c.m * ldc), seed++);
      std::vector<float> banded = c0, inline_bands = c0;
      cpu::sgemm("test", c.a_trans, c.b_trans, c.m, c.n, c.k, a.data(), lda, b.data(), ldb, c.beta, banded.data(), ldc);
      // Inside another parallel_rows job the pool is busy, so the bands run inline, one after another.
      parallel_rows(2, 1, [&](int64_t b0, int64_t) {
        if (b0 == 0)
          cpu::sgemm("test", c.a_trans, c.b_trans, c.m, c.n, c.k, a.data(), lda, b.data(), ldb, c.beta,
                     inline_bands.data(), ldc);
      });
      const std::string what = "m " + std::to_string(c.m) + " n " + std::to_string(c.n) + " k " + std::to_string(c.k) +
                               (c.a_trans ? " A^T" : "") + (c.b_trans ? " B^T" : "") + " pad " + std::to_string(c.pad) +
                               " beta " + std::to_string(c.beta) + ", " + std::to_string(threads) + " threads";
      INFO(what);
      CHECK(std::memcmp(banded.data(), inline_bands.data(), banded.size() * sizeof(float)) == 0);
      double worst = 0;
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < ldc; ++j) {
          const std::size_t at = static_cast<std::size_t>(i * ldc + j);
          if (j >= c.n) {  // padding between rows is never written
            worst = std::max(worst, banded[at] == c0[at] ? 0.0 : 1.0);
            continue;
          }
          double ref = c.beta * static_cast<double>(c0[at]), scale = std::abs(ref);
          for (int64_t p = 0; p < c.k; ++p) {
            const double x = a[static_cast<std::size_t>(c.a_trans ? p * lda + i : i * lda + p)];
            const double y = b[static_cast<std::size_t>(c.b_trans ? j * ldb + p : p * ldb + j)];
            ref += x * y;
            scale += std::abs(x * y);
          }
          worst = std::max(worst, std::abs(banded[at] - ref) / (scale + 1e-30));
        }
      }
      CHECK(worst < 1e-5);  // relative to the sum of |products|: float rounding over K terms
    }
  }
  set_thread_count(2);
}

// CUDA linear forward/backward (tiled f32 GEMM, column-sum dbias) against the CPU backend: sizes
// 1, odd, across the 64-wide tiles (64/65/130), the seed head's 1000->256 and 512->1, an empty
// batch, with and without bias and input gradient. Outputs start poisoned, buffers have red zones;
// dw and dbias must be bitwise repeatable.
#include <doctest/doctest.h>

#include <string>

#include "kernels/ops.h"
#include "runtime/error.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

struct Case {
  int64_t n, in, out;
};

std::string describe(const char* what, const Case& c, bool bias) {
  return std::string(what) + " x [" + std::to_string(c.n) + "," + std::to_string(c.in) + "] w [" +
         std::to_string(c.out) + "," + std::to_string(c.in) + "]" + (bias ? " with bias" : " no bias");
}

// Dot products of up to 1000 terms in [-1, 1].
constexpr test::Tolerance kGemm{1e-4, 1e-4, 1e-10};

}  // namespace

TEST_CASE("linear forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  const Case cases[] = {{1, 1, 1}, {2, 3, 5}, {2, 64, 65}, {5, 17, 130}, {2, 512, 1}, {3, 1000, 256}, {0, 3, 4}, {7, 1, 3}};
  uint64_t seed = 700;
  for (const Case& c : cases) {
    for (const bool with_bias : {true, false}) {
      const Tensor x = test::random_tensor({c.n, c.in}, seed++);
      const Tensor w = test::random_tensor({c.out, c.in}, seed++);
      const Tensor b = with_bias ? test::random_tensor({c.out}, seed++) : Tensor();
      const Tensor dy = test::random_tensor({c.n, c.out}, seed++);
      const Tensor xd = to_device(x), wd = to_device(w), dyd = to_device(dy);
      const Tensor ref = ops::linear_forward(x, w, b);
      const Tensor got = ops::linear_forward(xd, wd, with_bias ? to_device(b) : Tensor());
      test::require_cuda_close(got, ref, kGemm, describe("linear y", c, with_bias));

      for (const bool need_dx : {true, false}) {
        const ops::LinearGrads gref = ops::linear_backward(x, w, dy, with_bias, need_dx);
        const ops::LinearGrads ggot = ops::linear_backward(xd, wd, dyd, with_bias, need_dx);
        test::require_cuda_close(ggot.dw, gref.dw, kGemm, describe("linear dw", c, with_bias));
        CHECK(ggot.dx.defined() == need_dx);
        if (need_dx) test::require_cuda_close(ggot.dx, gref.dx, kGemm, describe("linear dx", c, with_bias));
        CHECK(ggot.dbias.defined() == with_bias);
        if (with_bias)
          test::require_cuda_close(ggot.dbias, gref.dbias, {1e-5, 1e-5, 1e-12}, describe("linear db", c, with_bias));
      }
      require_guards_intact();
    }
  }
}

TEST_CASE("linear gradients are bitwise repeatable") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = to_device(test::random_tensor({37, 70}, 1));
  const Tensor w = to_device(test::random_tensor({130, 70}, 2));
  const Tensor dy = to_device(test::random_tensor({37, 130}, 3));
  const ops::LinearGrads a = ops::linear_backward(x, w, dy, true, true);
  const ops::LinearGrads b = ops::linear_backward(x, w, dy, true, true);
  CHECK(test::bitwise_equal(a.dw, b.dw));
  CHECK(test::bitwise_equal(a.dbias, b.dbias));
  CHECK(test::bitwise_equal(a.dx, b.dx));
  require_guards_intact();
}

TEST_CASE("a GEMM larger than the kernel's grid is a clear error naming the op") {
  AE_GPU_TEST_PRELUDE();
  // 65536 tiles of 64 output features: one more than grid.y allows.
  const int64_t out = int64_t{65536} * 64;
  const Tensor x = to_device(test::random_tensor({1, 1}, 1));
  const Tensor w = Tensor::zeros({out, 1}, DType::f32, device());
  std::string message;
  try {
    (void)ops::linear_forward(x, w, Tensor());
  } catch (const Error& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(message.find("linear_forward") != std::string::npos);
  CHECK(message.find("grid") != std::string::npos);
  require_guards_intact();
}

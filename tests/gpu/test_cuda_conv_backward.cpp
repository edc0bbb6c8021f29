// CUDA conv2d backward-data and backward-weight (implicit GEMM, f32) against the CPU backend over
// an awkward sweep: 1x1 and odd spatial sizes, kernels 1/3/7, strides 1/2, padding 0..3, channel
// counts 1/3/5/17/64, batch 1 and 2. Outputs start poisoned (NaN) and every buffer has red zones,
// so an element left unwritten or a write out of bounds fails. Backward-weight's split-K reduction
// must be bitwise repeatable.
#include <doctest/doctest.h>

#include "kernels/cuda/conv_backward.h"
#include "kernels/ops.h"
#include "tests/gpu/conv_cases.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

using Case = ConvCase;
constexpr const auto& kCases = kConvSweep;

std::string describe(const char* op, const Case& c) {
  return std::string(op) + " x [" + std::to_string(c.n) + "," + std::to_string(c.h) + "," + std::to_string(c.w) +
         "," + std::to_string(c.c) + "] o " + std::to_string(c.o) + " k " + std::to_string(c.k) + " stride " +
         std::to_string(c.stride) + " pad " + std::to_string(c.pad);
}

}  // namespace

TEST_CASE("conv2d_backward_data matches the CPU backend over awkward shapes") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 100;
  for (const Case& c : kCases) {
    const ops::Conv2dParams p = params_of(c);
    const Shape x_shape{c.n, c.h, c.w, c.c};
    const Tensor w = test::random_tensor({c.o, c.k, c.k, c.c}, seed++);
    const Tensor dy = test::random_tensor({c.n, p.out_h(c.h), p.out_w(c.w), c.o}, seed++);
    const Tensor ref = ops::conv2d_backward_data(p, dy, w, x_shape);
    const Tensor got = ops::conv2d_backward_data(p, to_device(dy), to_device(w), x_shape);
    test::require_cuda_close(got, ref, {1e-5, 1e-4, 1e-10}, describe("dgrad", c));
    require_guards_intact();
  }
}

TEST_CASE("conv2d_backward_weight matches the CPU backend over awkward shapes") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 200;
  bool split_seen = false;
  for (const Case& c : kCases) {
    const ops::Conv2dParams p = params_of(c);
    const Shape w_shape{c.o, c.k, c.k, c.c};
    const Tensor x = test::random_tensor({c.n, c.h, c.w, c.c}, seed++);
    const Tensor dy = test::random_tensor({c.n, p.out_h(c.h), p.out_w(c.w), c.o}, seed++);
    const int64_t rows = dy.numel() / c.o;
    const int64_t tiles = (c.o + 63) / 64 * ((c.k * c.k * c.c + 63) / 64);
    split_seen = split_seen || cuda::conv_wgrad_split_count(rows, tiles) > 1;
    const Tensor ref = ops::conv2d_backward_weight(p, x, dy, w_shape);
    const Tensor got = ops::conv2d_backward_weight(p, to_device(x), to_device(dy), w_shape);
    // Sums over N*OH*OW (up to ~600) products of values in [-1, 1].
    test::require_cuda_close(got, ref, {1e-4, 1e-4, 1e-10}, describe("wgrad", c));
    require_guards_intact();
  }
  CHECK_MESSAGE(split_seen, "no case exercised backward-weight's split-K path");
}

TEST_CASE("conv2d_backward_weight is bitwise repeatable, split into slices or not") {
  AE_GPU_TEST_PRELUDE();
  const Case cases[] = {{2, 17, 17, 5, 3, 3, 1, 1}, {2, 5, 7, 3, 7, 3, 1, 1}};
  const Tensor x0 = to_device(test::random_tensor({2, 17, 17, 5}, 7));
  for (const Case& c : cases) {
    const ops::Conv2dParams p = params_of(c);
    const Tensor x = to_device(test::random_tensor({c.n, c.h, c.w, c.c}, 301));
    const Tensor dy = to_device(test::random_tensor({c.n, p.out_h(c.h), p.out_w(c.w), c.o}, 302));
    const Shape w_shape{c.o, c.k, c.k, c.c};
    const Tensor first = ops::conv2d_backward_weight(p, x, dy, w_shape);
    const Tensor second = ops::conv2d_backward_weight(p, x, dy, w_shape);
    INFO(describe("wgrad", c));
    CHECK(test::bitwise_equal(first, second));
  }
  CHECK(cuda::conv_wgrad_split_count(2 * 17 * 17, 1) > 1);
  CHECK(cuda::conv_wgrad_split_count(2 * 5 * 7, 1) == 1);
  require_guards_intact();
}

TEST_CASE("conv2d backward passes with different kernel, stride and padding per axis") {
  AE_GPU_TEST_PRELUDE();
  struct Asym {
    Shape x;
    int64_t o;
    int kh, kw, sh, sw, ph, pw;
  };
  const Asym cases[] = {{{2, 7, 5, 3}, 4, 3, 1, 2, 1, 1, 0}, {{1, 5, 13, 5}, 3, 1, 7, 1, 2, 0, 3}, {{1, 9, 8, 2}, 5, 3, 3, 3, 2, 1, 0}};
  uint64_t seed = 400;
  for (const Asym& c : cases) {
    ops::Conv2dParams p;
    p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw, p.pad_h = c.ph, p.pad_w = c.pw;
    const Shape w_shape{c.o, c.kh, c.kw, c.x[3]};
    const Tensor x = test::random_tensor(c.x, seed++);
    const Tensor w = test::random_tensor(w_shape, seed++);
    const Tensor dy = test::random_tensor({c.x[0], p.out_h(c.x[1]), p.out_w(c.x[2]), c.o}, seed++);
    const std::string what = "x " + shape_str(c.x) + " w " + shape_str(w_shape) + " stride " + std::to_string(c.sh) +
                             "x" + std::to_string(c.sw) + " pad " + std::to_string(c.ph) + "x" + std::to_string(c.pw);
    const Tensor dx = ops::conv2d_backward_data(p, to_device(dy), to_device(w), c.x);
    test::require_cuda_close(dx, ops::conv2d_backward_data(p, dy, w, c.x), {1e-5, 1e-4, 1e-10}, "dgrad " + what);
    const Tensor dw = ops::conv2d_backward_weight(p, to_device(x), to_device(dy), w_shape);
    test::require_cuda_close(dw, ops::conv2d_backward_weight(p, x, dy, w_shape), {1e-4, 1e-4, 1e-10}, "wgrad " + what);
    require_guards_intact();
  }
}

// CUDA conv2d forward (implicit GEMM, f32) against the CPU backend over an awkward sweep:
// 1x1 and odd spatial sizes, kernels 1/3/7, strides 1/2, padding 0..3, channel counts that are
// multiples of nothing, output channels across the 64-wide tile boundary.
#include <doctest/doctest.h>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"

using namespace ae;
using namespace ae::gputest;

TEST_CASE("conv2d_forward matches the CPU backend over awkward shapes") {
  AE_GPU_TEST_PRELUDE();
  struct Case {
    int64_t n, h, w, c, o;
    int k, stride, pad;
  };
  const Case cases[] = {
      {1, 1, 1, 1, 1, 1, 1, 0},   {2, 5, 7, 3, 7, 3, 1, 1},   {1, 13, 11, 5, 65, 3, 2, 1},
      {2, 9, 9, 3, 4, 7, 2, 3},   {1, 6, 6, 17, 9, 1, 2, 0},  {1, 7, 5, 2, 3, 3, 1, 0},
      {3, 4, 4, 8, 130, 1, 1, 0}, {1, 15, 15, 3, 16, 7, 2, 3}, {1, 3, 3, 4, 5, 3, 1, 2},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    ops::Conv2dParams p;
    p.kernel_h = p.kernel_w = c.k;
    p.stride_h = p.stride_w = c.stride;
    p.pad_h = p.pad_w = c.pad;
    const Tensor x = test::random_tensor({c.n, c.h, c.w, c.c}, seed++);
    const Tensor w = test::random_tensor({c.o, c.k, c.k, c.c}, seed++);
    const Tensor ref = ops::conv2d_forward(p, x, w);
    const Tensor got = ops::conv2d_forward(p, to_device(x), to_device(w));
    const std::string what = "conv2d_forward x " + shape_str(x.shape()) + " w " + shape_str(w.shape()) +
                             " stride " + std::to_string(c.stride) + " pad " + std::to_string(c.pad);
    test::require_cuda_close(got, ref, {1e-5, 1e-4, 1e-10}, what);
    require_guards_intact();
  }
}

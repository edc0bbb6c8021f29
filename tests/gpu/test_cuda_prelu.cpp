// CUDA PReLU forward/backward against the CPU backend, with one shared slope and one slope per
// channel, on NHWC and [N,C] inputs (1x1, odd sizes, channels 1/3/5/64/256), including a size
// large enough that the dslope reduction is split into several row chunks, and exact zeros in x
// (the kink belongs to the negative side). dslope must be bitwise repeatable.
#include <doctest/doctest.h>

#include "kernels/cuda/channel_reduce_layout.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// Every 7th element exactly 0.
Tensor with_zeros(const Shape& shape, uint64_t seed) {
  Tensor t = test::random_tensor(shape, seed);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); i += 7) p[i] = 0.0f;
  return t;
}

}  // namespace

TEST_CASE("prelu forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  const Shape shapes[] = {{1, 1, 1, 1}, {2, 7, 5, 3}, {1, 13, 17, 5}, {2, 7, 5, 64}, {2, 256}, {2, 65, 67, 1}};
  uint64_t seed = 800;
  bool chunked = false;
  for (const Shape& shape : shapes) {
    for (const bool shared : {true, false}) {
      const int64_t slopes = shared ? 1 : shape.back();
      chunked = chunked || cuda::channel_reduce_layout(shape_numel(shape) / slopes, slopes).row_chunks > 1;
      const std::string what = "prelu x " + shape_str(shape) + (shared ? " shared slope" : " per-channel slopes");
      const Tensor x = with_zeros(shape, seed++);
      const Tensor a = test::random_tensor({slopes}, seed++, 0.0f, 0.5f);
      const Tensor dy = test::random_tensor(shape, seed++);
      const Tensor xd = to_device(x), ad = to_device(a);
      test::require_cuda_close(ops::prelu_forward(xd, ad), ops::prelu_forward(x, a), {0.0, 0.0, 0.0}, what + " y");
      const ops::PReluGrads ref = ops::prelu_backward(x, a, dy);
      const ops::PReluGrads got = ops::prelu_backward(xd, ad, to_device(dy));
      test::require_cuda_close(got.dx, ref.dx, {0.0, 0.0, 0.0}, what + " dx");
      test::require_cuda_close(got.dslope, ref.dslope, {1e-5, 1e-5, 1e-12}, what + " dslope");
      require_guards_intact();
    }
  }
  CHECK_MESSAGE(chunked, "no case split the dslope reduction into several chunks");
}

TEST_CASE("prelu dslope is bitwise repeatable") {
  AE_GPU_TEST_PRELUDE();
  for (const int64_t slopes : {int64_t{1}, int64_t{5}}) {
    const Tensor x = to_device(test::random_tensor({2, 33, 35, 5}, 21));
    const Tensor dy = to_device(test::random_tensor({2, 33, 35, 5}, 22));
    const Tensor a = to_device(test::random_tensor({slopes}, 23, 0.0f, 0.5f));
    CHECK(test::bitwise_equal(ops::prelu_backward(x, a, dy).dslope, ops::prelu_backward(x, a, dy).dslope));
  }
  require_guards_intact();
}

// CUDA max pooling and adaptive average pooling (forward and backward) against the CPU backend:
// 1x1 and odd spatial sizes, kernels 1/2/3/7 (also non-square), strides 1/2/3, padding 0..3,
// channel counts 1/3/5/64, batch 1 and 2, inputs with many ties, adaptive bins that do not divide
// the input (7->3, 5->2, 17->4) and that upsample (4->7). Outputs start poisoned, buffers have red
// zones. The backward passes are gathers in the CPU's summation order, so they must agree to the bit.
#include <doctest/doctest.h>

#include <cmath>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

struct MaxCase {
  Shape x;
  int kh, kw, sh, sw, ph, pw;
};

const MaxCase kMaxCases[] = {
    {{1, 1, 1, 1}, 1, 1, 1, 1, 0, 0},   {{2, 7, 5, 3}, 3, 3, 2, 2, 1, 1},   {{1, 13, 17, 5}, 3, 3, 2, 2, 1, 1},
    {{2, 7, 5, 64}, 3, 3, 2, 2, 1, 1},  {{1, 9, 9, 3}, 7, 7, 2, 2, 3, 3},   {{2, 5, 7, 1}, 2, 2, 1, 1, 0, 0},
    {{1, 13, 17, 5}, 3, 3, 1, 1, 1, 1}, {{1, 4, 4, 3}, 1, 1, 2, 2, 0, 0},   {{1, 7, 9, 3}, 3, 1, 2, 1, 1, 0},
    {{2, 8, 6, 5}, 3, 3, 3, 3, 0, 0},   {{1, 2, 2, 3}, 3, 3, 2, 2, 1, 1},
};

// Values on a coarse grid: windows hold many exact ties, which must go to the first maximum in
// row-major window order, as on the CPU.
Tensor with_ties(const Shape& shape, uint64_t seed) {
  Tensor t = test::random_tensor(shape, seed, -2.0f, 2.0f);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::round(p[i] * 2.0f) / 2.0f;
  return t;
}

constexpr test::Tolerance kExact{0.0, 0.0, 0.0};

}  // namespace

TEST_CASE("maxpool2d forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 500;
  for (const MaxCase& c : kMaxCases) {
    for (const bool ties : {false, true}) {
      ops::MaxPool2dParams p;
      p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw, p.pad_h = c.ph, p.pad_w = c.pw;
      const std::string what = "maxpool x " + shape_str(c.x) + " kernel " + std::to_string(c.kh) + "x" +
                               std::to_string(c.kw) + " stride " + std::to_string(c.sh) + "x" + std::to_string(c.sw) +
                               " pad " + std::to_string(c.ph) + "x" + std::to_string(c.pw) + (ties ? " (ties)" : "");
      INFO(what);
      const Tensor x = ties ? with_ties(c.x, seed++) : test::random_tensor(c.x, seed++);
      const ops::MaxPoolOut ref = ops::maxpool2d_forward(p, x);
      const ops::MaxPoolOut got = ops::maxpool2d_forward(p, to_device(x));
      test::require_cuda_close(got.y, ref.y, kExact, what + " y");
      CHECK(test::bitwise_equal(got.argmax, ref.argmax));
      ops::MaxPool2dParams y_only = p;  // inference: the same y, no argmax written anywhere
      y_only.with_argmax = false;
      const ops::MaxPoolOut lean = ops::maxpool2d_forward(y_only, to_device(x));
      CHECK_FALSE(lean.argmax.defined());
      test::require_cuda_close(lean.y, ref.y, kExact, what + " y without argmax");

      const Tensor dy = test::random_tensor(ref.y.shape(), seed++);
      const Tensor dx_ref = ops::maxpool2d_backward(p, dy, ref.argmax, c.x);
      const Tensor dx_got = ops::maxpool2d_backward(p, to_device(dy), got.argmax, c.x);
      test::require_cuda_close(dx_got, dx_ref, kExact, what + " dx");
      require_guards_intact();
    }
  }
}

TEST_CASE("adaptive_avgpool2d forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  struct Case {
    Shape x;
    int64_t oh, ow;
  };
  const Case cases[] = {
      {{1, 1, 1, 1}, 1, 1},  {{2, 7, 5, 3}, 3, 2},   {{1, 13, 17, 5}, 1, 1}, {{2, 5, 5, 64}, 2, 2},
      {{1, 7, 7, 3}, 3, 3},  {{2, 4, 6, 5}, 7, 5},   {{1, 13, 17, 1}, 5, 4}, {{2, 1, 1, 64}, 1, 1},
      {{1, 3, 17, 3}, 2, 4},
  };
  uint64_t seed = 600;
  for (const Case& c : cases) {
    const ops::AdaptiveAvgPool2dParams p{c.oh, c.ow};
    const std::string what =
        "adaptive_avgpool x " + shape_str(c.x) + " -> " + std::to_string(c.oh) + "x" + std::to_string(c.ow);
    const Tensor x = test::random_tensor(c.x, seed++);
    const Tensor ref = ops::adaptive_avgpool2d_forward(p, x);
    const Tensor got = ops::adaptive_avgpool2d_forward(p, to_device(x));
    test::require_cuda_close(got, ref, {1e-6, 1e-6, 1e-14}, what + " y");

    const Tensor dy = test::random_tensor(ref.shape(), seed++);
    const Tensor dx_ref = ops::adaptive_avgpool2d_backward(p, dy, c.x);
    const Tensor dx_got = ops::adaptive_avgpool2d_backward(p, to_device(dy), c.x);
    test::require_cuda_close(dx_got, dx_ref, kExact, what + " dx");
    require_guards_intact();
  }
}

// CUDA image ops (normalize_image, resize_bilinear; forward and backward) against the CPU
// backend: u8 and f32 inputs, HWC and NHWC, upsampling, shrinking, 1-pixel axes, identity,
// odd channel counts, with guarded buffers and NaN-poisoned outputs. The backward is a gather,
// so it must be bitwise repeatable.
#include <doctest/doctest.h>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// Same float operations on both devices; nvcc may contract a*b+c into one rounding.
const test::Tolerance kTight{1e-6, 1e-5, 1e-12};

struct ResizeCase {
  Shape x;
  int64_t oh, ow;
};
const ResizeCase kResizeCases[] = {
    {{1, 1, 1, 3}, 5, 4},    {{2, 4, 3, 3}, 9, 7},     {{1, 37, 53, 3}, 12, 16}, {{1, 9, 11, 1}, 9, 11},
    {{3, 5, 1, 5}, 2, 3},    {{1, 17, 23, 64}, 8, 31}, {{2, 64, 48, 3}, 24, 96}, {{0, 4, 4, 3}, 2, 2},
};

}  // namespace

TEST_CASE("normalize_image forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  const ops::NormalizeImageParams p;
  // u8 HWC, the decoded-photo path.
  Tensor u8 = Tensor::empty({13, 17, 3}, DType::u8);
  for (int64_t i = 0; i < u8.numel(); ++i) u8.data<uint8_t>()[i] = static_cast<uint8_t>((i * 53 + 7) % 256);
  const Tensor cpu_u8 = ops::normalize_image(p, u8);
  const Tensor gpu_u8 = ops::normalize_image(p, to_device(u8));
  test::require_cuda_close(gpu_u8, cpu_u8, kTight, "normalize_image u8 [13,17,3]");
  // Division and subtraction only: no contraction is possible, so the bits agree.
  CHECK(test::bitwise_equal(gpu_u8, cpu_u8));
  require_guards_intact();

  ops::NormalizeImageParams q;
  q.mean[3] = 0.5f;
  q.std[3] = 0.125f;
  uint64_t seed = 1;
  for (const Shape& s : {Shape{1, 1, 1}, Shape{2, 5, 7, 4}, Shape{3, 9, 2}, Shape{2, 33, 31, 3}}) {
    const Tensor x = test::random_tensor(s, seed++);
    test::require_cuda_close(ops::normalize_image(q, to_device(x)), ops::normalize_image(q, x), kTight,
                             "normalize_image " + shape_str(s));
    const Tensor dy = test::random_tensor(s.size() == 3 ? Shape{1, s[0], s[1], s[2]} : s, seed++);
    const Tensor dx = ops::normalize_image_backward(q, to_device(dy), s);
    CHECK(dx.shape() == s);
    test::require_cuda_close(dx, ops::normalize_image_backward(q, dy, s), kTight,
                             "normalize_image_backward " + shape_str(s));
    require_guards_intact();
  }
}

TEST_CASE("resize_bilinear forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 100;
  for (const ResizeCase& c : kResizeCases) {
    const ops::ResizeBilinearParams p{c.oh, c.ow};
    const std::string what = shape_str(c.x) + " -> " + std::to_string(c.oh) + "x" + std::to_string(c.ow);
    const Tensor x = test::random_tensor(c.x, seed++);
    test::require_cuda_close(ops::resize_bilinear_forward(p, to_device(x)), ops::resize_bilinear_forward(p, x), kTight,
                             "resize_bilinear_forward " + what);
    const Tensor dy = test::random_tensor({c.x[0], c.oh, c.ow, c.x[3]}, seed++);
    const Tensor dx_cpu = ops::resize_bilinear_backward(p, dy, c.x);
    const Tensor ddy = to_device(dy);
    const Tensor dx_gpu = ops::resize_bilinear_backward(p, ddy, c.x);
    test::require_cuda_close(dx_gpu, dx_cpu, kTight, "resize_bilinear_backward " + what);
    const Tensor again = ops::resize_bilinear_backward(p, ddy, c.x).to(Device::cpu());
    INFO("repeat of resize_bilinear_backward " << what);
    CHECK(test::bitwise_equal(again, dx_gpu));
    require_guards_intact();
  }
}

TEST_CASE("the photo pipeline on the device: u8 photo -> normalise -> resize equals the CPU") {
  AE_GPU_TEST_PRELUDE();
  Tensor photo = Tensor::empty({1, 61, 45, 3}, DType::u8);
  for (int64_t i = 0; i < photo.numel(); ++i) photo.data<uint8_t>()[i] = static_cast<uint8_t>((i * 97 + 3) % 256);
  const ops::NormalizeImageParams p;
  const ops::ResizeBilinearParams r{32, 32};
  const Tensor cpu = ops::resize_bilinear_forward(r, ops::normalize_image(p, photo));
  const Tensor gpu = ops::resize_bilinear_forward(r, ops::normalize_image(p, to_device(photo)));
  test::require_cuda_close(gpu, cpu, kTight, "normalise then resize");
  require_guards_intact();
}

// CUDA photo edits (photo_edit_forward, photo_edit_backward_theta) against the CPU backend over a
// table of awkward shapes: 1x1, odd sizes, N = 1..3, a single [H,W,3] image, an empty batch, u8 and
// f32 inputs, K = 0..16 tone knots, mild and clamping edits, and images large enough that the
// backward has many blocks and threads that sum several pixels each. Buffers have red zones and
// outputs start poisoned with NaN. theta = 0 is the identity on the device too, and dtheta (block
// partials, then one ordered pass) is bitwise repeatable.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

using ops::PhotoEditParams;

struct Case {
  Shape x;
  int knots;
  DType dtype;
  float theta_scale;
};

// The backward grid holds at most 512 blocks of 256 threads: [2,257,257,3] (132,098 pixels) gives
// some threads two pixels.
const Case kCases[] = {
    {{1, 1, 1, 3}, 4, DType::f32, 0.3f},   {{1, 1, 1, 3}, 16, DType::f32, 1.5f}, {{2, 7, 5, 3}, 4, DType::f32, 0.3f},
    {{3, 13, 11, 3}, 0, DType::f32, 1.0f}, {{9, 7, 3}, 1, DType::f32, 0.5f},     {{0, 4, 4, 3}, 4, DType::f32, 0.3f},
    {{2, 17, 9, 3}, 7, DType::u8, 0.8f},   {{1, 61, 45, 3}, 4, DType::u8, 0.3f}, {{2, 33, 35, 3}, 16, DType::f32, 1.2f},
    {{1, 129, 131, 3}, 4, DType::f32, 0.6f}, {{2, 257, 257, 3}, 5, DType::f32, 0.4f},
};

std::string describe(const Case& c) {
  return shape_str(c.x) + (c.dtype == DType::u8 ? " u8" : " f32") + " K=" + std::to_string(c.knots) + " theta scale " +
         std::to_string(c.theta_scale);
}

Tensor input_for(const Case& c, uint64_t seed) {
  const Tensor unit = test::random_tensor(c.x, seed, 0.0f, 1.0f);
  if (c.dtype == DType::f32) return unit;
  Tensor u8 = Tensor::empty(c.x, DType::u8);
  for (int64_t i = 0; i < u8.numel(); ++i) u8.data<uint8_t>()[i] = static_cast<uint8_t>(unit.f32()[i] * 255.999f);
  return u8;
}

Tensor theta_for(int knots, uint64_t seed, float scale) {
  return test::random_tensor({ops::kPhotoEditFixed + knots}, seed, -scale, scale);
}

// nvcc may contract a*b+c in the per-pixel code: a float rounding or two.
constexpr test::Tolerance kForward{1e-6, 0.0, 1e-12};

}  // namespace

TEST_CASE("photo_edit forward and dtheta match the CPU backend over awkward shapes") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 4000;
  double worst_y = 0.0, worst_dtheta = 0.0;
  for (const Case& c : kCases) {
    const PhotoEditParams p{c.knots};
    const Tensor x = input_for(c, seed++);
    const Tensor theta = theta_for(c.knots, seed++, c.theta_scale);
    const Tensor dy = test::random_tensor(c.x, seed++);
    const Tensor xd = to_device(x), thetad = to_device(theta), dyd = to_device(dy);

    const Tensor y_cpu = ops::photo_edit_forward(p, x, theta);
    const Tensor y_gpu = ops::photo_edit_forward(p, xd, thetad);
    REQUIRE(y_gpu.device().is_cuda());
    REQUIRE(y_gpu.shape() == c.x);
    const Tensor y_host = y_gpu.to(Device::cpu());
    AE_REQUIRE_OK(test::compare(y_host, y_cpu, kForward, "photo_edit_forward " + describe(c)));
    for (int64_t i = 0; i < y_cpu.numel(); ++i) {
      worst_y = std::max(worst_y, static_cast<double>(std::fabs(y_host.f32()[i] - y_cpu.f32()[i])));
    }

    const std::vector<float> g_cpu = ops::photo_edit_backward_theta(p, x, theta, dy).to_vector();
    const Tensor g_gpu = ops::photo_edit_backward_theta(p, xd, thetad, dyd);
    REQUIRE(g_gpu.device().is_cuda());
    REQUIRE(g_gpu.shape() == Shape{p.theta_size()});
    const std::vector<float> g_host = g_gpu.to_vector();
    // Both sum float per-pixel contributions in double, in different orders.
    double scale = 1.0;
    for (const float v : dy.to_vector()) scale += std::fabs(v);
    for (std::size_t q = 0; q < g_cpu.size(); ++q) {
      const double err = std::fabs(static_cast<double>(g_host[q]) - g_cpu[q]);
      worst_dtheta = std::max(worst_dtheta, err / scale);
      INFO(describe(c) << " dtheta[" << q << "]: device " << g_host[q] << ", cpu " << g_cpu[q]);
      CHECK(err <= 1e-6 * scale);
    }
    // The same call again: the same bits.
    CHECK(test::bitwise_equal(ops::photo_edit_backward_theta(p, xd, thetad, dyd).to(Device::cpu()), g_gpu.to(Device::cpu())));
    require_guards_intact();
  }
  std::printf("photo_edit device vs cpu: max |y error| %.3g, max |dtheta error| / sum|dy| %.3g\n", worst_y,
              worst_dtheta);
}

TEST_CASE("photo_edit with theta = 0 is the identity on the device, bit for bit") {
  AE_GPU_TEST_PRELUDE();
  for (const int K : {0, 4, 16}) {
    const PhotoEditParams p{K};
    const Tensor x = test::random_tensor({2, 19, 23, 3}, 70 + static_cast<uint64_t>(K), 0.0f, 1.0f);
    const Tensor y = ops::photo_edit_forward(p, to_device(x), to_device(Tensor::zeros({p.theta_size()})));
    INFO("K=" << K);
    CHECK(test::bitwise_equal(y.to(Device::cpu()), x));
  }
  require_guards_intact();
}

TEST_CASE("photo_edit rejects tensors on different devices") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = to_device(Tensor::zeros({1, 4, 4, 3})), theta = Tensor::zeros({9});
  test::require_error([&] { ops::photo_edit_forward(PhotoEditParams{}, x, theta); },
                      {"photo_edit_forward", "different devices"});
  test::require_error(
      [&] { ops::photo_edit_backward_theta(PhotoEditParams{}, x, to_device(theta), Tensor::zeros({1, 4, 4, 3})); },
      {"photo_edit_backward_theta", "different devices"});
}

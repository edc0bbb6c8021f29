// CUDA batch norm (train and eval, forward and backward) against the CPU backend: NHWC
// BatchNorm2d and [N,C] BatchNorm1d shapes with 1x1 and odd spatial sizes, channel counts
// 1/3/5/64/256, batch 1 and 2, inputs with a large common offset (cancellation), and sizes large
// enough that the per-channel reduction is split into several row chunks. Outputs start poisoned
// and buffers have red zones. The reductions must be bitwise repeatable.
#include <doctest/doctest.h>

#include "kernels/cuda/channel_reduce_layout.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;

namespace {

struct Case {
  Shape shape;
  float offset;  // added to every x: |mean| >> std tests the two-pass variance
};

// [2,33,35,3] and [2,65,67,1] are large enough for several row chunks per channel (checked below).
const Case kCases[] = {
    {{2, 1, 1, 3}, 0.0f},   {{1, 7, 5, 5}, 0.0f},    {{2, 13, 17, 64}, 0.0f}, {{2, 1, 1, 1}, 0.0f},
    {{1, 13, 17, 3}, 50.0f}, {{2, 256}, 0.0f},        {{5, 3}, 0.0f},          {{2, 33, 35, 3}, 0.0f},
    {{2, 65, 67, 1}, 3.0f},  {{2, 7, 5, 64}, 100.0f},
};

std::string describe(const char* what, const Case& c) {
  return std::string(what) + " x " + shape_str(c.shape) + " offset " + std::to_string(c.offset);
}

Tensor input_for(const Case& c, uint64_t seed) {
  Tensor x = test::random_tensor(c.shape, seed, -2.0f, 2.0f);
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] += c.offset;
  return x;
}

constexpr test::Tolerance kElementwise{1e-5, 1e-4, 1e-10};
constexpr test::Tolerance kStatistics{1e-6, 1e-5, 1e-12};
constexpr test::Tolerance kChannelSums{1e-4, 1e-5, 1e-11};

}  // namespace

TEST_CASE("batchnorm train forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1000;
  bool chunked = false;
  for (const Case& c : kCases) {
    const int64_t ch = c.shape.back();
    chunked = chunked || cuda::channel_reduce_layout(shape_numel(c.shape) / ch, ch).row_chunks > 1;
    const ops::BatchNormParams p{1e-5f, 0.1f};
    const Tensor x = input_for(c, seed++);
    const Tensor gamma = test::random_tensor({ch}, seed++, 0.5f, 1.5f);
    const Tensor beta = test::random_tensor({ch}, seed++);
    Tensor rm_cpu = test::random_tensor({ch}, seed++), rv_cpu = test::random_tensor({ch}, seed++, 0.5f, 2.0f);
    Tensor rm_gpu = to_device(rm_cpu), rv_gpu = to_device(rv_cpu);
    const ops::BatchNormTrainOut ref = ops::batchnorm_forward_train(p, x, gamma, beta, rm_cpu, rv_cpu);
    const Tensor xd = to_device(x), gd = to_device(gamma);
    const ops::BatchNormTrainOut got = ops::batchnorm_forward_train(p, xd, gd, to_device(beta), rm_gpu, rv_gpu);
    test::require_cuda_close(got.y, ref.y, kElementwise, describe("train y", c));
    test::require_cuda_close(got.save_mean, ref.save_mean, kStatistics, describe("save_mean", c));
    test::require_cuda_close(got.save_invstd, ref.save_invstd, kStatistics, describe("save_invstd", c));
    test::require_cuda_close(rm_gpu, rm_cpu, kStatistics, describe("running_mean", c));
    test::require_cuda_close(rv_gpu, rv_cpu, kStatistics, describe("running_var", c));

    const Tensor dy = test::random_tensor(c.shape, seed++);
    const ops::BatchNormGrads gref = ops::batchnorm_backward_train(x, dy, gamma, ref.save_mean, ref.save_invstd);
    const ops::BatchNormGrads ggot = ops::batchnorm_backward_train(xd, to_device(dy), gd, got.save_mean, got.save_invstd);
    test::require_cuda_close(ggot.dx, gref.dx, kElementwise, describe("train dx", c));
    test::require_cuda_close(ggot.dgamma, gref.dgamma, kChannelSums, describe("train dgamma", c));
    test::require_cuda_close(ggot.dbeta, gref.dbeta, kChannelSums, describe("train dbeta", c));
    require_guards_intact();
  }
  CHECK_MESSAGE(chunked, "no case split the per-channel reduction into several chunks");
}

TEST_CASE("batchnorm train backward through a ReLU (relu_y) on the device: the unfused device ops' bits, and the CPU's") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1500;
  for (const Case& c : kCases) {
    const int64_t ch = c.shape.back();
    const ops::BatchNormParams p{1e-5f, 0.1f};
    const Tensor xd = to_device(input_for(c, seed++));
    const Tensor gd = to_device(test::random_tensor({ch}, seed++, 0.5f, 1.5f));
    const Tensor bd = to_device(test::random_tensor({ch}, seed++));
    Tensor rm = to_device(Tensor::zeros({ch})), rv = to_device(Tensor::full({ch}, 1.0f));
    const ops::BatchNormTrainOut f = ops::batchnorm_forward_train(p, xd, gd, bd, rm, rv);
    const Tensor y = ops::relu_forward(f.y);  // about half the outputs clamped
    const Tensor dy = to_device(test::random_tensor(c.shape, seed++));
    const ops::BatchNormGrads fused = ops::batchnorm_backward_train(xd, dy, gd, f.save_mean, f.save_invstd, y);
    REQUIRE(fused.dx.device().is_cuda());
    const ops::BatchNormGrads unfused =
        ops::batchnorm_backward_train(xd, ops::relu_backward(y, dy), gd, f.save_mean, f.save_invstd);
    CHECK_MESSAGE(test::bitwise_equal(fused.dx, unfused.dx), describe("dx", c));
    CHECK_MESSAGE(test::bitwise_equal(fused.dgamma, unfused.dgamma), describe("dgamma", c));
    CHECK_MESSAGE(test::bitwise_equal(fused.dbeta, unfused.dbeta), describe("dbeta", c));
    const Tensor x_cpu = xd.to(Device::cpu()), g_cpu = gd.to(Device::cpu());
    const ops::BatchNormGrads cpu =
        ops::batchnorm_backward_train(x_cpu, dy.to(Device::cpu()), g_cpu, f.save_mean.to(Device::cpu()),
                                      f.save_invstd.to(Device::cpu()), y.to(Device::cpu()));
    test::require_cuda_close(fused.dx, cpu.dx, kElementwise, describe("relu_y dx vs CPU", c));
    test::require_cuda_close(fused.dgamma, cpu.dgamma, kChannelSums, describe("relu_y dgamma vs CPU", c));
    require_guards_intact();
  }
}

TEST_CASE("batchnorm eval forward and backward match the CPU backend") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 2000;
  for (const Case& c : kCases) {
    const int64_t ch = c.shape.back();
    const ops::BatchNormParams p{1e-3f, 0.1f};
    const Tensor x = input_for(c, seed++);
    const Tensor gamma = test::random_tensor({ch}, seed++, 0.5f, 1.5f);
    const Tensor beta = test::random_tensor({ch}, seed++);
    Tensor rm = test::random_tensor({ch}, seed++);
    const Tensor rv = test::random_tensor({ch}, seed++, 0.5f, 2.0f);
    float* rmp = rm.f32();
    for (int64_t j = 0; j < ch; ++j) rmp[j] += c.offset;
    const Tensor xd = to_device(x), gd = to_device(gamma), rmd = to_device(rm), rvd = to_device(rv);
    const Tensor ref = ops::batchnorm_forward_eval(p, x, gamma, beta, rm, rv);
    const Tensor got = ops::batchnorm_forward_eval(p, xd, gd, to_device(beta), rmd, rvd);
    test::require_cuda_close(got, ref, kElementwise, describe("eval y", c));

    const Tensor dy = test::random_tensor(c.shape, seed++);
    const ops::BatchNormGrads gref = ops::batchnorm_backward_eval(p, x, dy, gamma, rm, rv);
    const ops::BatchNormGrads ggot = ops::batchnorm_backward_eval(p, xd, to_device(dy), gd, rmd, rvd);
    test::require_cuda_close(ggot.dx, gref.dx, kElementwise, describe("eval dx", c));
    test::require_cuda_close(ggot.dgamma, gref.dgamma, kChannelSums, describe("eval dgamma", c));
    test::require_cuda_close(ggot.dbeta, gref.dbeta, kChannelSums, describe("eval dbeta", c));
    require_guards_intact();
  }
}

TEST_CASE("batchnorm reductions are bitwise repeatable") {
  AE_GPU_TEST_PRELUDE();
  for (const Shape& shape : {Shape{2, 33, 35, 3}, Shape{2, 13, 17, 64}, Shape{2, 256}}) {
    INFO("x " << shape_str(shape));
    const int64_t ch = shape.back();
    const ops::BatchNormParams p;
    const Tensor x = to_device(test::random_tensor(shape, 11));
    const Tensor dy = to_device(test::random_tensor(shape, 12));
    const Tensor gamma = to_device(test::random_tensor({ch}, 13, 0.5f, 1.5f));
    const Tensor beta = to_device(test::random_tensor({ch}, 14));
    ops::BatchNormTrainOut fwd[2];
    ops::BatchNormGrads bwd[2], bwd_eval[2];
    Tensor running_var[2];
    for (int run = 0; run < 2; ++run) {
      Tensor rm = Tensor::zeros({ch}, DType::f32, device());
      running_var[run] = Tensor::full({ch}, 1.0f, device());
      fwd[run] = ops::batchnorm_forward_train(p, x, gamma, beta, rm, running_var[run]);
      bwd[run] = ops::batchnorm_backward_train(x, dy, gamma, fwd[run].save_mean, fwd[run].save_invstd);
      bwd_eval[run] = ops::batchnorm_backward_eval(p, x, dy, gamma, rm, running_var[run]);
    }
    CHECK(test::bitwise_equal(fwd[0].y, fwd[1].y));
    CHECK(test::bitwise_equal(fwd[0].save_mean, fwd[1].save_mean));
    CHECK(test::bitwise_equal(fwd[0].save_invstd, fwd[1].save_invstd));
    CHECK(test::bitwise_equal(running_var[0], running_var[1]));
    CHECK(test::bitwise_equal(bwd[0].dx, bwd[1].dx));
    CHECK(test::bitwise_equal(bwd[0].dgamma, bwd[1].dgamma));
    CHECK(test::bitwise_equal(bwd[0].dbeta, bwd[1].dbeta));
    CHECK(test::bitwise_equal(bwd_eval[0].dgamma, bwd_eval[1].dgamma));
    CHECK(test::bitwise_equal(bwd_eval[0].dbeta, bwd_eval[1].dbeta));
  }
  require_guards_intact();
}

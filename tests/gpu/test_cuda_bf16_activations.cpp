// bf16 activation storage on the CUDA device: the same op checks as the CPU's
// (tests/support/bf16_storage_checks.h: each bf16 path is the device's own f32 path on the widened
// inputs, rounded once where it stores), then a ResNet-18 storing bf16 activations on the device in
// bf16 conv math against the same model storing f32, with a launch count proving its convolutions
// really read bf16 operands (the bf16-storage kernel, kernels/cuda/conv_implicit_gemm.h) rather
// than widening them first. Every device buffer has red zones.
#include <doctest/doctest.h>

#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/conv_math.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/bf16_storage_checks.h"

using namespace ae;
using namespace ae::gputest;

namespace {

Tensor on_device(const Tensor& t) { return t.device() == device() ? t : to_device(t); }

}  // namespace

TEST_CASE("bf16 storage: batchnorm_apply reads a bf16 residual and writes a bf16 y (CUDA)") {
  AE_GPU_TEST_PRELUDE();
  test::check_bf16_batchnorm_apply(on_device, 100);
  require_guards_intact();
}

TEST_CASE("bf16 storage: conv2d_batchnorm and conv2d_batchnorm_train (CUDA, every conv math)") {
  AE_GPU_TEST_PRELUDE();
  for (cuda::ConvMath math : {cuda::ConvMath::f32, cuda::ConvMath::bf16}) {
    INFO("math " << cuda::conv_math_name(math));
    const cuda::ScopedConvMath mode(math);
    test::check_bf16_conv_batchnorm(on_device, 200);
  }
  require_guards_intact();
}

TEST_CASE("bf16 storage: ReLU masks, BatchNorm backward and weight gradients from stored bf16 (CUDA)") {
  AE_GPU_TEST_PRELUDE();
  test::check_bf16_backward_inputs(on_device, 300);
  require_guards_intact();
}

TEST_CASE("bf16 storage: max pooling stays bf16, average pooling widens (CUDA)") {
  AE_GPU_TEST_PRELUDE();
  test::check_bf16_pooling(on_device, 400);
  require_guards_intact();
}

TEST_CASE("bf16 storage: the ops that do not take bf16 say so (CUDA)") {
  AE_GPU_TEST_PRELUDE();
  test::check_bf16_refusals(on_device);
}

TEST_CASE("bf16 storage: the device writes the bits the CPU writes") {
  AE_GPU_TEST_PRELUDE();
  const Tensor x = test::random_tensor({2, 5, 7, 3}, 500, -3.0f, 3.0f);
  const Tensor c3 = test::random_tensor({3}, 501, 0.5f, 1.5f), v3 = test::random_tensor({3}, 502, 0.1f, 2.0f);
  const Tensor r = ops::cast(test::random_tensor({2, 5, 7, 3}, 503), DType::bf16);
  ops::BatchNormApplyParams p;
  p.relu = true;
  p.out_dtype = DType::bf16;
  const Tensor cpu = ops::batchnorm_apply(p, x, c3, c3, c3, v3, r);
  const Tensor dev = ops::batchnorm_apply(p, to_device(x), to_device(c3), to_device(c3), to_device(c3),
                                          to_device(v3), to_device(r));
  CHECK(test::bitwise_equal(dev.to(Device::cpu()), cpu));
}

TEST_CASE("a ResNet-18 storing bf16 activations on the device agrees with the f32 model and reads bf16 in its convs") {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(cuda::ConvMath::bf16);
  // With adapters (the folded, fused training path), at batch 4 and 32 px: the emulated device
  // runs four models; the CPU test takes the larger batch and both configurations.
  const cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
  const test::Bf16ModelAgreement a = test::bf16_model_agreement(device(), true, 31, {4, 32, 32, 3});
  const cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
  const int64_t storage = after.pipelined_bf16_storage - before.pipelined_bf16_storage;
  MESSAGE("bf16-storage conv launches " << storage << ", bf16 widened " << after.bf16_widened - before.bf16_widened);
  test::check_bf16_model_agreement(a);
  // The 19 convolutions after the stem read bf16 in the bf16 model's inference forward, training
  // forward and input-gradient forward (the stem reads the f32 image); nothing was widened.
  CHECK(storage == 3 * 19);
  CHECK(after.bf16_widened == before.bf16_widened);
  require_guards_intact();
}

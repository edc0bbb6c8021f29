// bf16 activation storage on the CPU backend: every op that takes a bf16 input or writes a bf16
// output gives the bits of its f32 form on the widened inputs, rounded once where it stores
// (tests/support/bf16_storage_checks.h; the CUDA device runs the same checks), and a ResNet-18
// with bf16 activations: forward, training step and input gradient close to the f32 model's, with
// bf16 really stored between the layers.
#include <doctest/doctest.h>

#include <cmath>

#include "model/resnet18.h"
#include "tests/support/bf16_storage_checks.h"

using namespace ae;

namespace {

Tensor on_cpu(const Tensor& t) { return t; }

}  // namespace

TEST_CASE("bf16 storage: batchnorm_apply reads a bf16 residual and writes a bf16 y (CPU)") {
  test::check_bf16_batchnorm_apply(on_cpu, 100);
}

TEST_CASE("bf16 storage: conv2d_batchnorm and conv2d_batchnorm_train (CPU)") {
  test::check_bf16_conv_batchnorm(on_cpu, 200);
}

TEST_CASE("bf16 storage: ReLU masks, BatchNorm backward and weight gradients from stored bf16 (CPU)") {
  test::check_bf16_backward_inputs(on_cpu, 300);
}

TEST_CASE("bf16 storage: max pooling stays bf16, average pooling widens (CPU)") { test::check_bf16_pooling(on_cpu, 400); }

TEST_CASE("bf16 storage: the ops that do not take bf16 say so (CPU)") { test::check_bf16_refusals(on_cpu); }

TEST_CASE("a ResNet-18 storing bf16 activations agrees with the f32 model (CPU)") {
  for (bool adapters : {false, true}) {
    INFO("adapters " << adapters);
    test::check_bf16_model_agreement(test::bf16_model_agreement(Device::cpu(), adapters, 31));
  }
}

TEST_CASE("activation storage: the process default, parsing, and refusals") {
  CHECK(model::default_activation_dtype() == DType::f32);
  CHECK(model::parse_activation_dtype("bf16", "--activations") == DType::bf16);
  test::require_error([] { model::parse_activation_dtype("fp16", "--activations"); },
                      {"--activations", "'fp16'", "f32 or bf16"});
  test::require_error([] { model::set_default_activation_dtype(DType::i64); }, {"i64", "f32 or bf16"});
  model::set_default_activation_dtype(DType::bf16);
  model::ModelConfig c;
  model::ResNet18 m(c);
  CHECK(m.activation_dtype() == DType::bf16);
  model::set_default_activation_dtype(DType::f32);
  CHECK(model::ResNet18(c).activation_dtype() == DType::f32);
  test::require_error([&] { m.set_activation_dtype(DType::u8); }, {"set_activation_dtype", "u8"});
  const uint64_t bf16_switches = m.inference_switches();
  m.set_activation_dtype(DType::f32);
  CHECK(m.inference_switches() != bf16_switches);  // a captured graph is captured again
}

// The input-gradient pass (ResNet18::input_gradient, BatchNorm folded into the backward weights)
// and the differentiable preprocessing on the CUDA backend against the CPU: the path that
// `aesthete enhance` and `aesthete saliency` run on a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "model/shared_model.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "train/preprocess.h"

using namespace ae;

namespace {

// A seed-head model with adapters, BatchNorm statistics and head moved from their defaults.
model::Checkpoint perturbed_checkpoint(uint64_t seed) {
  model::ModelConfig cfg;
  cfg.adapters = true;
  cfg.seed = seed;
  model::ResNet18 net(cfg);
  for (const model::StateEntry& e : net.state_entries()) {
    if (e.counter != nullptr) continue;
    Tensor& t = e.param != nullptr ? e.param->value : *e.buffer;
    if (e.name.ends_with("running_var") || (e.param && e.param->group == model::ParamGroup::bn_affine && e.name.ends_with(".weight")))
      t.copy_from(test::random_tensor(t.shape(), ++seed, 0.6f, 1.4f));
    else if (e.param == nullptr || e.param->group != model::ParamGroup::backbone)
      t.copy_from(test::random_tensor(t.shape(), ++seed, -0.1f, 0.1f));
  }
  return model::checkpoint_from_tensors(net.state_dict(), "perturbed");
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, static_cast<double>(std::fabs(v)));
  return m;
}

}  // namespace

TEST_CASE("input_gradient through the differentiable preprocessing: CUDA matches the CPU") {
  AE_GPU_TEST_PRELUDE();
  const model::Checkpoint ck = perturbed_checkpoint(21);
  auto cpu = model::make_model(ck);
  auto gpu = model::make_model(ck);
  gpu->to(gputest::device());
  cpu->set_training(false);
  gpu->set_training(false);
  // A photo of odd size in [0,1], preprocessed by the ops (resize + normalise) to 40 x 40.
  const Tensor image = test::random_tensor({1, 29, 51, 3}, 5, 0.0f, 1.0f);
  const Tensor in_cpu = img::preprocess_eval_ops(image, 40);
  const Tensor in_gpu = img::preprocess_eval_ops(gputest::to_device(image), 40);
  REQUIRE(in_gpu.device().is_cuda());
  const auto g = gpu->input_gradient(in_gpu);
  const auto c = cpu->input_gradient(in_cpu);
  REQUIRE(g.dx.device().is_cuda());
  // The eval-mode tolerance of the whole-model CUDA test (tests/gpu/test_cuda_model.cpp), scaled
  // to the largest magnitude: the same kernels, the same float sums in other orders.
  test::require_cuda_close(g.score, c.score, {2e-4 * max_abs(c.score), 1e-3, 1e-8}, "score");
  test::require_cuda_close(g.dx, c.dx, {2e-4 * max_abs(c.dx), 1e-3, 1e-8}, "d score / d input");
  const Tensor d_image_gpu = img::preprocess_eval_ops_backward(g.dx, image.shape(), 40);
  const Tensor d_image_cpu = img::preprocess_eval_ops_backward(c.dx, image.shape(), 40);
  test::require_cuda_close(d_image_gpu, d_image_cpu, {2e-4 * max_abs(d_image_cpu), 1e-3, 1e-8}, "d score / d image");
  // No parameter gradient was formed on the device either.
  for (auto& r : gpu->parameters()) CHECK_FALSE(r.param->grad.defined());
  gputest::require_guards_intact();
}

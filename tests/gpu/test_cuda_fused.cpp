// The fused epilogue batchnorm_apply on the CUDA backend: against the CPU backend (running and
// saved statistics, with and without residual and ReLU, awkward shapes), against the unfused
// CUDA ops it replaces, and a BasicBlock's fused inference path against its unfused path on the
// device; conv2d_batchnorm (the Backend's composition on this backend) against the two ops and
// the CPU. Buffers are guarded and outputs poisoned until written.
#include <doctest/doctest.h>

#include <cmath>

#include "kernels/cuda/graph.h"
#include "kernels/ops.h"
#include "model/basic_block.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/conv_bn_case.h"
#include "tests/support/expect.h"
#include "tests/support/random_block.h"

using namespace ae;
using namespace ae::gputest;

namespace {

// One or two float roundings apart at most (a GPU may contract x*s+b into one FMA).
const test::Tolerance kTight{1e-6, 1e-5, 1e-12};

const Shape kShapes[] = {{2, 5, 7, 3}, {1, 1, 1, 64}, {3, 4, 4, 1}, {4, 9}, {2, 13, 11, 17}, {0, 3, 3, 5}};

}  // namespace

TEST_CASE("batchnorm_apply matches the CPU backend and the unfused CUDA ops") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    const int64_t c = s.back();
    const Tensor gamma = test::random_tensor({c}, seed, 0.5f, 1.5f), beta = test::random_tensor({c}, seed + 1);
    const Tensor mean = test::random_tensor({c}, seed + 2), var = test::random_tensor({c}, seed + 3, 0.1f, 2.0f);
    const Tensor x = test::random_tensor(s, seed + 4, -3.0f, 3.0f), r = test::random_tensor(s, seed + 5);
    seed += 10;
    const Tensor dg = to_device(gamma), db = to_device(beta), dm = to_device(mean), dv = to_device(var),
                 dx = to_device(x), dr = to_device(r);
    const Tensor dinvstd = to_device(test::random_tensor({c}, seed, 0.5f, 3.0f));
    for (const auto stats : {ops::BatchNormStats::running, ops::BatchNormStats::saved}) {
      for (const bool relu : {false, true}) {
        for (const bool residual : {false, true}) {
          ops::BatchNormApplyParams p;
          p.stats = stats;
          p.relu = relu;
          const Tensor& st = stats == ops::BatchNormStats::running ? dv : dinvstd;
          const std::string what = "batchnorm_apply " + shape_str(s) + (relu ? " relu" : "") +
                                   (residual ? " residual" : "") +
                                   (stats == ops::BatchNormStats::running ? " running" : " saved");
          const Tensor got = ops::batchnorm_apply(p, dx, dg, db, dm, st, residual ? dr : Tensor());
          REQUIRE(got.device().is_cuda());
          const Tensor cpu = ops::batchnorm_apply(p, x, gamma, beta, mean, st.to(Device::cpu()),
                                                  residual ? r : Tensor());
          test::require_cuda_close(got, cpu, kTight, what + " vs CPU");
          if (stats == ops::BatchNormStats::running) {
            Tensor unfused = ops::batchnorm_forward_eval(ops::BatchNormParams{}, dx, dg, db, dm, dv);
            if (residual) unfused = relu ? ops::add_relu(unfused, dr) : ops::add(unfused, dr);
            else if (relu) unfused = ops::relu_forward(unfused);
            test::require_cuda_close(got, unfused, kTight, what + " vs unfused CUDA ops");
          }
          require_guards_intact();
        }
      }
    }
  }
}

namespace {

// The block's weights and statistics moved to the device.
void move_to_device(model::BasicBlock& b) {
  for (model::Conv2d* conv : {&b.conv1, &b.conv2, &b.adapter1, &b.adapter2, &b.down_conv})
    if (conv->weight.value.defined()) conv->weight.value = to_device(conv->weight.value);
  for (model::BatchNorm* bn : {&b.bn1, &b.bn2, &b.down_bn}) {
    if (!bn->weight.value.defined()) continue;
    for (Tensor* t : {&bn->weight.value, &bn->bias.value, &bn->running_mean, &bn->running_var}) *t = to_device(*t);
  }
}

void randomise_to_device(model::BasicBlock& b, uint64_t seed) {
  test::randomise(b, seed);
  move_to_device(b);
}

}  // namespace

TEST_CASE("BasicBlock inference on the device: fused epilogues equal the unfused layers") {
  AE_GPU_TEST_PRELUDE();
  model::BasicBlock block(6, 10, 2, /*adapters=*/true);
  randomise_to_device(block, 70);
  const Tensor x = to_device(test::random_tensor({2, 9, 7, 6}, 80));
  block.fuse_inference_epilogues = false;
  const Tensor unfused = block.forward(x, false, false);
  block.fuse_inference_epilogues = true;
  const Tensor fused = block.forward(x, false, false);
  REQUIRE(fused.device().is_cuda());
  test::require_cuda_close(fused, unfused, kTight, "BasicBlock fused vs unfused inference");
  require_guards_intact();
}

TEST_CASE("conv2d_batchnorm on the device: the conv and batchnorm_apply it composes, bit for bit, and the CPU's") {
  AE_GPU_TEST_PRELUDE();
  // The CUDA backend runs the Backend's composition (kernels/backend.h); these pin that it is the
  // device's own two ops, in place over the convolution's output, with the arguments in their order.
  uint64_t seed = 300;
  for (const test::ConvBnCase& k : test::kConvBnCases) {
    const test::ConvBnInputs in = test::random_conv_bn_inputs(k, seed);
    seed += 10;
    const Tensor &x = in.x, &w = in.w, &r = in.residual, &gamma = in.gamma, &beta = in.beta, &mean = in.mean,
                 &var = in.var;
    const Tensor dx = to_device(x), dw = to_device(w), dr = to_device(r), dg = to_device(gamma), db = to_device(beta),
                 dm = to_device(mean), dv = to_device(var);
    for (const bool residual : {false, true}) {
      ops::BatchNormApplyParams p;
      p.relu = true;
      const std::string what = "conv2d_batchnorm x " + shape_str(k.x) + (residual ? " residual" : "");
      const Tensor got = ops::conv2d_batchnorm(k.p, p, dx, dw, dg, db, dm, dv, residual ? dr : Tensor());
      REQUIRE(got.device().is_cuda());
      const Tensor composed = ops::batchnorm_apply(p, ops::conv2d_forward(k.p, dx, dw), dg, db, dm, dv, residual ? dr : Tensor());
      CHECK_MESSAGE(test::bitwise_equal(got, composed), what);
      const Tensor cpu = ops::conv2d_batchnorm(k.p, p, x, w, gamma, beta, mean, var, residual ? r : Tensor());
      test::require_cuda_close(got, cpu, test::Tolerance{1e-5, 1e-4, 1e-10}, what + " vs CPU");
      require_guards_intact();
    }
  }
}

TEST_CASE("conv_fold_centre_tap on the device: the CPU's bits over awkward shapes") {
  AE_GPU_TEST_PRELUDE();
  for (const auto& [o, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 3}, {7, 130}, {64, 257}}) {
    CAPTURE(o);
    CAPTURE(c);
    const Tensor w = test::random_tensor({o, 3, 3, c}, static_cast<uint64_t>(o + c));
    const Tensor a = test::random_tensor({o, 1, 1, c}, static_cast<uint64_t>(o + c + 1));
    const Tensor got = ops::conv_fold_centre_tap(to_device(w), to_device(a));
    REQUIRE(got.device().is_cuda());
    CHECK(test::bitwise_equal(got, ops::conv_fold_centre_tap(w, a)));
  }
  require_guards_intact();
}

TEST_CASE("BasicBlock training with adapters on the device: folded into the fused conv+BatchNorm path") {
  AE_GPU_TEST_PRELUDE();
  model::BasicBlock cpu_block(6, 10, 2, /*adapters=*/true);
  test::randomise(cpu_block, 90);
  model::BasicBlock folded = cpu_block, separate = cpu_block;
  move_to_device(folded);
  move_to_device(separate);
  separate.fold_adapters = false;  // the separate 1x1 adapters, layer by layer (before the fold ran on the device)
  const Tensor x = test::random_tensor({2, 9, 7, 6}, 91), dy = test::random_tensor({2, 5, 4, 10}, 92);

  // Forward and backward of one step, captured: the node count tells which path ran.
  auto step = [&](model::BasicBlock& b, Tensor& y, Tensor& dx, std::size_t& nodes) {
    const Tensor xd = to_device(x), dyd = to_device(dy);
    cuda::CapturedGraph g("block step");
    g.capture([&] {
      y = b.forward(xd, /*training=*/true, /*keep=*/true);
      dx = b.backward(dyd, /*need_dx=*/true);
    });
    g.replay();
    nodes = g.node_count();
  };
  Tensor y_fold, dx_fold, y_sep, dx_sep;
  std::size_t nodes_fold = 0, nodes_sep = 0;
  step(folded, y_fold, dx_fold, nodes_fold);
  step(separate, y_sep, dx_sep, nodes_sep);
  CHECK(nodes_fold < nodes_sep);  // one convolution each way instead of two plus an add, stats in the epilogue

  const Tensor y_cpu = cpu_block.forward(x, true, true);
  const Tensor dx_cpu = cpu_block.backward(dy, true);
  const test::Tolerance train{1e-4, 1e-3, 1e-8};
  test::require_cuda_close(y_fold, y_cpu, train, "folded block output vs CPU");
  test::require_cuda_close(dx_fold, dx_cpu, train, "folded block dx vs CPU");
  test::require_cuda_close(folded.adapter1.weight.grad, cpu_block.adapter1.weight.grad, train, "adapter1 grad vs CPU");
  test::require_cuda_close(folded.adapter2.weight.grad, cpu_block.adapter2.weight.grad, train, "adapter2 grad vs CPU");
  test::require_cuda_close(folded.bn1.weight.grad, cpu_block.bn1.weight.grad, train, "bn1 gamma grad vs CPU");
  test::require_cuda_close(folded.bn2.running_var, cpu_block.bn2.running_var, train, "bn2 running_var vs CPU");
  test::require_cuda_close(y_sep, y_cpu, train, "separate-adapter block output vs CPU");
  test::require_cuda_close(separate.adapter1.weight.grad, cpu_block.adapter1.weight.grad, train, "separate adapter1 grad");
  require_guards_intact();
}

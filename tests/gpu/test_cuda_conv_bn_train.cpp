// ops::conv2d_batchnorm_train on the CUDA backend (kernels/cuda/conv_stats.h): the BatchNorm
// statistics gathered in the convolution kernels' epilogue, BatchNorm + residual + ReLU in one pass.
// What is checked, for every forward kernel that can gather them (f32 tiled GEMM, tf32/bf16 tiled
// tensor-core GEMM, pipelined 64x64 and 128x128 with 16- and 4-byte copies, and split-K with its
// separate statistics pass), over ragged tiles (M not a multiple of 64 or 128), channel counts
// that leave a tile's columns partly empty or span several column blocks, and outputs whose mean
// is far larger than their spread:
//  - the convolution's output is bitwise conv2d_forward's under the same settings (gathering the
//    statistics reads the tile, never changes it);
//  - save_mean / save_invstd against a double reference computed on the host from that output
//    (at most about one float rounding apart), and against batchnorm_forward_train's own two
//    passes on the same output; the running statistics likewise;
//  - y is bitwise batchnorm_apply(saved statistics) of the output with the op's own statistics,
//    the residual and the ReLU;
//  - two runs give the same bits; the launch counters prove which kernel and which statistics path
//    ran; every buffer's red zones are intact (gpu_harness.h).
// Then: a synchronised-BatchNorm reducer makes the backend compose the ops instead (bitwise the
// composition), and a ResNet-18 training step on the device with the fused path against the
// layer-by-layer one: loss, every gradient and the running statistics within float tolerance.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/batchnorm_sync.h"
#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/conv_stats.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "model/resnet18.h"
#include "tests/gpu/conv_cases.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;
using cuda::ConvForwardKernel;
using cuda::ConvMath;

namespace {

// Statistics from the same double sums in another order: one or two float roundings apart.
const test::Tolerance kStats{2e-6, 1e-6, 1e-12};
const test::Tolerance kTight{1e-6, 1e-5, 1e-12};

struct Case {
  ConvCase c;        // {n, h, w, c, o, k, stride, pad}
  float offset;      // added to x: conv outputs with a mean far above their spread
  const char* what;  // why the case is here
};
const Case kCases[] = {
    {{2, 9, 9, 8, 16, 3, 1, 1}, 0.0f, "M 162: three 64-row tiles, the last ragged; 16 of 64 columns"},
    {{1, 13, 11, 4, 70, 3, 1, 1}, 0.0f, "O 70: two column blocks, the second 6 wide"},
    {{2, 15, 15, 3, 16, 7, 2, 3}, 0.0f, "the C = 3 stem: 4-byte copies"},
    {{3, 8, 8, 8, 24, 1, 2, 0}, 0.0f, "1x1 stride 2 (downsample), M 48: one short tile"},
    {{2, 11, 11, 8, 12, 3, 1, 1}, 40.0f, "mean about 40x the spread: no cancellation in the variance"},
    {{1, 2, 2, 4, 3, 1, 1, 0}, 0.0f, "M 4, O 3: a tile of 4 rows"},
};

struct Setting {
  ConvMath math;
  ConvForwardKernel kernel;
  int64_t split;  // set_conv_forward_split_k (0 automatic, 1 never)
  const char* name;
};
const Setting kSettings[] = {
    {ConvMath::f32, ConvForwardKernel::automatic, 0, "f32"},
    {ConvMath::tf32, ConvForwardKernel::tiled, 0, "tf32 tiled"},
    {ConvMath::bf16, ConvForwardKernel::tiled, 0, "bf16 tiled"},
    {ConvMath::tf32, ConvForwardKernel::pipelined_64x64, 1, "tf32 pipelined 64x64"},
    {ConvMath::bf16, ConvForwardKernel::pipelined_128x128, 1, "bf16 pipelined 128x128"},
    {ConvMath::tf32, ConvForwardKernel::pipelined_64x64, 3, "tf32 pipelined split-K 3"},
};

// Mean and 1/sqrt(biased var + eps) per channel, in double, of y [M, C] on the host.
void host_statistics(const Tensor& y, double eps, std::vector<float>& mean, std::vector<float>& invstd) {
  const std::vector<float> v = y.to_vector();
  const int64_t c = y.dim(-1), m = y.numel() / c;
  mean.assign(static_cast<std::size_t>(c), 0.0f);
  invstd.assign(static_cast<std::size_t>(c), 0.0f);
  for (int64_t j = 0; j < c; ++j) {
    double s = 0.0;
    for (int64_t r = 0; r < m; ++r) s += v[static_cast<std::size_t>(r * c + j)];
    const double mu = s / static_cast<double>(m);
    double q = 0.0;
    for (int64_t r = 0; r < m; ++r) {
      const double d = v[static_cast<std::size_t>(r * c + j)] - mu;
      q += d * d;
    }
    mean[static_cast<std::size_t>(j)] = static_cast<float>(mu);
    invstd[static_cast<std::size_t>(j)] = static_cast<float>(1.0 / std::sqrt(q / static_cast<double>(m) + eps));
  }
}

struct Inputs {
  Tensor x, w, gamma, beta, running_mean, running_var, residual;
};

Inputs make_inputs(const Case& k, uint64_t seed) {
  const ConvCase& c = k.c;
  const ops::Conv2dParams p = params_of(c);
  Inputs in;
  Tensor x = test::random_tensor({c.n, c.h, c.w, c.c}, seed, -1.0f, 1.0f);
  if (k.offset != 0.0f) x = ops::add(x, Tensor::full(x.shape(), k.offset));
  in.x = to_device(x);
  const float bound = 1.5f / std::sqrt(static_cast<float>(c.k * c.k * c.c));
  in.w = to_device(test::random_tensor({c.o, c.k, c.k, c.c}, seed + 1, -bound, bound));
  in.gamma = to_device(test::random_tensor({c.o}, seed + 2, 0.5f, 1.5f));
  in.beta = to_device(test::random_tensor({c.o}, seed + 3, -0.5f, 0.5f));
  in.running_mean = to_device(test::random_tensor({c.o}, seed + 4, -0.2f, 0.2f));
  in.running_var = to_device(test::random_tensor({c.o}, seed + 5, 0.5f, 1.5f));
  in.residual = to_device(test::random_tensor({c.n, p.out_h(c.h), p.out_w(c.w), c.o}, seed + 6));
  return in;
}

Tensor copy(const Tensor& t) { return to_device(t.to(Device::cpu())); }

}  // namespace

TEST_CASE("conv2d_batchnorm_train on the device: statistics from the epilogue, every forward kernel") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 500;
  for (const Case& k : kCases) {
    const ops::Conv2dParams p = params_of(k.c);
    const Inputs in = make_inputs(k, seed);
    seed += 10;
    for (const Setting& s : kSettings) {
      const cuda::ScopedConvMath math(s.math);
      const cuda::ScopedConvForwardKernel kernel(s.kernel);
      const cuda::ScopedConvForwardSplitK split(s.split);
      // Residual and ReLU are batchnorm_apply's, whichever kernel ran: all four combinations with
      // the first setting, both on with the others (the emulated device is slow).
      const bool all = &s == &kSettings[0];
      for (const bool relu : {true, false}) {
        for (const bool with_residual : {true, false}) {
          if (!all && !(relu && with_residual)) continue;
          const std::string what = std::string(k.what) + ", " + s.name + (relu ? ", relu" : "") +
                                   (with_residual ? ", residual" : "");
          CAPTURE(what);
          const Tensor residual = with_residual ? in.residual : Tensor();
          ops::BatchNormParams bn;
          Tensor rm = copy(in.running_mean), rv = copy(in.running_var);
          const cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
          const cuda::ConvStatsLaunches stats_before = cuda::conv_stats_launches();
          const ops::ConvBatchNormTrainOut out =
              ops::conv2d_batchnorm_train(p, bn, relu, in.x, in.w, in.gamma, in.beta, rm, rv, residual);
          const cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
          const cuda::ConvStatsLaunches stats_after = cuda::conv_stats_launches();
          REQUIRE(out.y.device().is_cuda());

          // Which kernel ran, and where the statistics came from.
          const bool split_k = after.pipelined_split_k > before.pipelined_split_k;
          if (s.math == ConvMath::f32) {
            CHECK(after.f32_tiled == before.f32_tiled + 1);
          } else if (s.kernel == ConvForwardKernel::tiled) {
            CHECK(after.tc_tiled == before.tc_tiled + 1);
          } else if (s.kernel == ConvForwardKernel::pipelined_64x64) {
            CHECK(after.pipelined_64x64 == before.pipelined_64x64 + 1);
          } else {
            CHECK(after.pipelined_128x128 == before.pipelined_128x128 + 1);
          }
          if (s.split > 1 && k.c.k * k.c.k * k.c.c > 128) CHECK(split_k);
          if (split_k) {
            CHECK(stats_after.separate == stats_before.separate + 1);
            CHECK(stats_after.epilogue == stats_before.epilogue);
          } else {
            CHECK(stats_after.epilogue == stats_before.epilogue + 1);
            CHECK(stats_after.separate == stats_before.separate);
          }

          // The convolution itself is untouched by the statistics.
          CHECK(test::bitwise_equal(out.conv, ops::conv2d_forward(p, in.x, in.w)));

          // Statistics: the double reference, and batchnorm_forward_train's own passes.
          std::vector<float> mean, invstd;
          host_statistics(out.conv, bn.eps, mean, invstd);
          test::require_close(out.save_mean.to(Device::cpu()), Tensor::from_vector({k.c.o}, mean), kStats,
                              what + ": save_mean vs double reference");
          test::require_close(out.save_invstd.to(Device::cpu()), Tensor::from_vector({k.c.o}, invstd), kStats,
                              what + ": save_invstd vs double reference");
          Tensor rm2 = copy(in.running_mean), rv2 = copy(in.running_var);
          const ops::BatchNormTrainOut two_pass =
              ops::batchnorm_forward_train(bn, out.conv, in.gamma, in.beta, rm2, rv2);
          test::require_cuda_close(out.save_mean, two_pass.save_mean, kStats, what + ": save_mean vs two passes");
          test::require_cuda_close(out.save_invstd, two_pass.save_invstd, kStats, what + ": save_invstd vs two passes");
          test::require_cuda_close(rm, rm2, kStats, what + ": running_mean vs two passes");
          test::require_cuda_close(rv, rv2, kStats, what + ": running_var vs two passes");

          // y: BatchNorm with those statistics, residual, ReLU in one pass, bit for bit.
          ops::BatchNormApplyParams apply;
          apply.stats = ops::BatchNormStats::saved;
          apply.relu = relu;
          CHECK(test::bitwise_equal(out.y, ops::batchnorm_apply(apply, out.conv, in.gamma, in.beta, out.save_mean,
                                                                out.save_invstd, residual)));

          // Deterministic.
          Tensor rm3 = copy(in.running_mean), rv3 = copy(in.running_var);
          const ops::ConvBatchNormTrainOut again =
              ops::conv2d_batchnorm_train(p, bn, relu, in.x, in.w, in.gamma, in.beta, rm3, rv3, residual);
          CHECK(test::bitwise_equal(again.save_mean, out.save_mean));
          CHECK(test::bitwise_equal(again.save_invstd, out.save_invstd));
          CHECK(test::bitwise_equal(again.y, out.y));
          CHECK(test::bitwise_equal(rv3, rv));
          require_guards_intact();
        }
      }
    }
  }
}

TEST_CASE("conv2d_batchnorm_train on the device with a synchronised-BatchNorm reducer: the composition") {
  AE_GPU_TEST_PRELUDE();
  const Case k{{2, 9, 9, 8, 16, 3, 1, 1}, 0.0f, "reducer"};
  const ops::Conv2dParams p = params_of(k.c);
  const Inputs in = make_inputs(k, 900);
  int calls = 0;
  // One process: the identity reduction, counted (two per training BatchNorm forward).
  const ops::ScopedBatchNormSync sync([&calls](double*, int64_t) { ++calls; });
  ops::BatchNormParams bn;
  Tensor rm = copy(in.running_mean), rv = copy(in.running_var);
  const cuda::ConvStatsLaunches before = cuda::conv_stats_launches();
  const ops::ConvBatchNormTrainOut out =
      ops::conv2d_batchnorm_train(p, bn, true, in.x, in.w, in.gamma, in.beta, rm, rv, in.residual);
  const cuda::ConvStatsLaunches after = cuda::conv_stats_launches();
  CHECK(calls == 2);
  CHECK(after.epilogue == before.epilogue);
  CHECK(after.separate == before.separate);
  Tensor rm2 = copy(in.running_mean), rv2 = copy(in.running_var);
  const Tensor conv = ops::conv2d_forward(p, in.x, in.w);
  const ops::BatchNormTrainOut b = ops::batchnorm_forward_train(bn, conv, in.gamma, in.beta, rm2, rv2);
  CHECK(test::bitwise_equal(out.conv, conv));
  CHECK(test::bitwise_equal(out.save_mean, b.save_mean));
  CHECK(test::bitwise_equal(out.save_invstd, b.save_invstd));
  CHECK(test::bitwise_equal(out.y, ops::add_relu(b.y, in.residual)));
  CHECK(test::bitwise_equal(rv, rv2));
  require_guards_intact();
}

namespace {

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (const float v : t.to_vector()) m = std::max(m, static_cast<double>(std::fabs(v)));
  return m;
}

}  // namespace

TEST_CASE("ResNet-18 training step on the device: fused conv+BatchNorm epilogues against the layer-by-layer forward") {
  AE_GPU_TEST_PRELUDE();
  // Statistics one float rounding apart move every later value by about as much, amplified through
  // the batch-statistics backward: bounds relative to each tensor's largest value, loose enough for
  // that and tight enough to catch a wrong residual, ReLU, statistic or kept tensor.
  struct Result {
    Tensor out, dx;
    model::NamedTensors grads, state;
  };
  Result r[2];
  for (int fused = 0; fused < 2; ++fused) {
    model::ModelConfig config;
    config.head = model::HeadType::seed;
    config.dropout = 0.0f;
    config.seed = 7;
    model::ResNet18 net(config);
    net.to(device());
    net.set_training(true);
    net.set_fuse_training_epilogues(fused == 1);
    const Tensor x = to_device(test::random_tensor({2, 32, 32, 3}, 12, -1.0f, 1.0f));
    const Tensor target = to_device(test::random_tensor({2, 1}, 13));
    net.zero_grad();
    const cuda::ConvStatsLaunches before = cuda::conv_stats_launches();
    const Tensor out = net.forward(x);
    const cuda::ConvStatsLaunches after = cuda::conv_stats_launches();
    // 20 convolutions with a BatchNorm: the stem, 16 in the blocks, 3 downsamples.
    CHECK(after.epilogue + after.separate - before.epilogue - before.separate == (fused == 1 ? 20 : 0));
    r[fused].dx = net.backward(ops::mse_loss_backward(out, target), /*need_input_grad=*/true).to(Device::cpu());
    r[fused].out = out.to(Device::cpu());
    r[fused].grads = net.grads_pytorch_layout();
    r[fused].state = net.state_dict();
  }
  const auto close = [](const Tensor& got, const Tensor& ref, const std::string& what) {
    const double scale = std::max(max_abs(ref), 1e-30);
    test::require_close(got, ref, {2e-4 * scale, 1e-3, 1e-6}, what);
  };
  close(r[1].out, r[0].out, "output");
  close(r[1].dx, r[0].dx, "input gradient");
  REQUIRE(r[0].grads.size() == r[1].grads.size());
  for (std::size_t i = 0; i < r[0].grads.size(); ++i) {
    REQUIRE(r[0].grads[i].first == r[1].grads[i].first);
    close(r[1].grads[i].second, r[0].grads[i].second, "grad " + r[0].grads[i].first);
  }
  REQUIRE(r[0].state.size() == r[1].state.size());
  for (std::size_t i = 0; i < r[0].state.size(); ++i) {
    const std::string& name = r[0].state[i].first;
    if (r[0].state[i].second.dtype() != DType::f32) {
      CHECK(test::bitwise_equal(r[1].state[i].second, r[0].state[i].second));  // num_batches_tracked
      continue;
    }
    close(r[1].state[i].second, r[0].state[i].second, "state " + name);
  }
  require_guards_intact();
}

// The fused epilogue batchnorm_apply (batch norm with known statistics + residual + ReLU in one
// pass) on the CPU: equal bit for bit to the unfused ops it replaces (eval-mode and train-mode
// statistics, with and without residual and ReLU), close to a double-precision loop, clear
// errors; and a BasicBlock's fused inference path equal to its unfused path. conv2d_batchnorm
// (the convolution with that epilogue in its store) equal bit for bit to the two ops on every CPU
// convolution path and ISA, red zones around the direct kernels' and Winograd's epilogue, Winograd's
// epilogue on every ISA, tile size and chunking with partial tiles, and its errors.
// conv2d_batchnorm_train (training: batch statistics) equal bit for bit to the ops it is defined
// as, a ResNet-18 training step equal with and without it, and its errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "kernels/cpu/batchnorm_apply.h"
#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/winograd.h"
#include "kernels/ops.h"
#include "model/basic_block.h"
#include "model/resnet18.h"
#include "runtime/alloc.h"
#include "tests/support/check.h"
#include "tests/support/conv_bn_case.h"
#include "tests/support/conv_scope.h"
#include "tests/support/expect.h"
#include "tests/support/random_block.h"

using namespace ae;
using ae::test::bitwise_equal;

namespace {

struct Channels {
  Tensor gamma, beta, mean, var;
};
Channels random_channels(int64_t c, uint64_t seed) {
  return {test::random_tensor({c}, seed, 0.5f, 1.5f), test::random_tensor({c}, seed + 1),
          test::random_tensor({c}, seed + 2), test::random_tensor({c}, seed + 3, 0.1f, 2.0f)};
}

ops::BatchNormApplyParams apply_params(ops::BatchNormStats stats, bool relu) {
  ops::BatchNormApplyParams p;
  p.stats = stats;
  p.relu = relu;
  return p;
}

const Shape kShapes[] = {{2, 5, 7, 3}, {1, 1, 1, 64}, {3, 4, 4, 1}, {4, 9}, {2, 13, 11, 17}};

}  // namespace

TEST_CASE("batchnorm_apply with running statistics equals eval batch norm + add_relu / relu, bit for bit") {
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    const int64_t c = s.back();
    const Channels ch = random_channels(c, seed);
    const Tensor x = test::random_tensor(s, seed + 10, -3.0f, 3.0f);
    const Tensor r = test::random_tensor(s, seed + 11);
    seed += 20;
    const ops::BatchNormParams bn;
    const Tensor bn_y = ops::batchnorm_forward_eval(bn, x, ch.gamma, ch.beta, ch.mean, ch.var);
    INFO("shape " << shape_str(s));
    using ops::BatchNormStats;
    CHECK(bitwise_equal(ops::batchnorm_apply(apply_params(BatchNormStats::running, true), x, ch.gamma, ch.beta,
                                             ch.mean, ch.var, r),
                        ops::add_relu(bn_y, r)));
    CHECK(bitwise_equal(ops::batchnorm_apply(apply_params(BatchNormStats::running, true), x, ch.gamma, ch.beta,
                                             ch.mean, ch.var, Tensor()),
                        ops::relu_forward(bn_y)));
    CHECK(bitwise_equal(ops::batchnorm_apply(apply_params(BatchNormStats::running, false), x, ch.gamma, ch.beta,
                                             ch.mean, ch.var, Tensor()),
                        bn_y));
    CHECK(bitwise_equal(ops::batchnorm_apply(apply_params(BatchNormStats::running, false), x, ch.gamma, ch.beta,
                                             ch.mean, ch.var, r),
                        ops::add(bn_y, r)));
  }
}

TEST_CASE("batchnorm_apply with saved statistics equals the train-mode normalisation + add_relu, bit for bit") {
  uint64_t seed = 100;
  for (const Shape& s : kShapes) {
    const int64_t c = s.back();
    if (s.size() > 0 && test::random_tensor(s, 0).numel() / c < 2) continue;  // train mode needs M >= 2
    Channels ch = random_channels(c, seed);
    const Tensor x = test::random_tensor(s, seed + 10, -3.0f, 3.0f);
    const Tensor r = test::random_tensor(s, seed + 11);
    seed += 20;
    const ops::BatchNormTrainOut t = ops::batchnorm_forward_train(ops::BatchNormParams{}, x, ch.gamma, ch.beta,
                                                                  ch.mean, ch.var);
    INFO("shape " << shape_str(s));
    CHECK(bitwise_equal(ops::batchnorm_apply(apply_params(ops::BatchNormStats::saved, true), x, ch.gamma, ch.beta,
                                             t.save_mean, t.save_invstd, r),
                        ops::add_relu(t.y, r)));
    CHECK(bitwise_equal(ops::batchnorm_apply(apply_params(ops::BatchNormStats::saved, false), x, ch.gamma,
                                             ch.beta, t.save_mean, t.save_invstd, Tensor()),
                        t.y));
  }
}

TEST_CASE("batchnorm_apply in place: the same bits, written over x's storage") {
  uint64_t seed = 100;
  for (const Shape& s : kShapes) {
    const Channels ch = random_channels(s.back(), seed);
    const Tensor r = test::random_tensor(s, seed + 1);
    for (const bool relu : {false, true}) {
      for (const bool residual : {false, true}) {
        ops::BatchNormApplyParams p = apply_params(ops::BatchNormStats::running, relu);
        const Tensor x = test::random_tensor(s, seed + 2, -3.0f, 3.0f);
        const Tensor expected = ops::batchnorm_apply(p, x, ch.gamma, ch.beta, ch.mean, ch.var, residual ? r : Tensor());
        p.in_place = true;
        const Tensor y = ops::batchnorm_apply(p, x, ch.gamma, ch.beta, ch.mean, ch.var, residual ? r : Tensor());
        INFO("shape " << shape_str(s) << (relu ? " relu" : "") << (residual ? " residual" : ""));
        CHECK(y.storage() == x.storage());
        CHECK(bitwise_equal(y, expected));
        CHECK(bitwise_equal(x, expected));
      }
    }
    seed += 10;
  }
}

TEST_CASE("ResNet-18 inference holds one stem-sized activation at a time, not three") {
  // The stem's output (N x H/2 x W/2 x 64) is the largest activation of the network. Eval BatchNorm
  // and ReLU write over it, and the max pool keeps no argmax: the peak is that output and the pooled
  // quarter. Before, the conv, BatchNorm and ReLU outputs were alive together (3x), plus an i64
  // argmax (another half).
  model::ResNet18 net(model::ModelConfig{});
  net.set_training(false);
  net.set_grad_enabled(false);
  const int64_t n = 4, side = 192;
  const Tensor x = test::random_tensor({n, side, side, 3}, 4);
  (void)net.forward(x);  // grow the per-thread workspaces first: they are not activations
  const double stem = static_cast<double>(n * (side / 2) * (side / 2) * 64 * sizeof(float));
  reset_host_peak();
  const double live_before = static_cast<double>(host_memory_stats().live_bytes);
  const Tensor y = net.forward(x);
  const double extra = static_cast<double>(host_memory_stats().peak_live_bytes) - live_before;
  INFO("peak above the model and input: " << extra / 1e6 << " MB; the stem output is " << stem / 1e6 << " MB");
  CHECK(y.dim(0) == n);
  CHECK(extra < 1.6 * stem);
}

TEST_CASE("batchnorm_apply matches a double-precision loop") {
  const Shape s{2, 5, 3, 6};
  const Channels ch = random_channels(6, 7);
  const Tensor x = test::random_tensor(s, 8, -3.0f, 3.0f), r = test::random_tensor(s, 9);
  ops::BatchNormApplyParams p = apply_params(ops::BatchNormStats::running, true);
  p.eps = 1e-3f;
  const Tensor y = ops::batchnorm_apply(p, x, ch.gamma, ch.beta, ch.mean, ch.var, r);
  const std::vector<double> xv = test::to_double(x), rv = test::to_double(r), g = test::to_double(ch.gamma),
                            b = test::to_double(ch.beta), m = test::to_double(ch.mean), v = test::to_double(ch.var);
  std::vector<double> ref(xv.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const std::size_t j = i % 6;
    const double e = (xv[i] - m[j]) / std::sqrt(v[j] + static_cast<double>(p.eps)) * g[j] + b[j] + rv[i];
    ref[i] = e > 0 ? e : 0;
  }
  AE_REQUIRE_OK(test::compare(y, ref, test::Tolerance{1e-5, 1e-5, 1e-11}, "batchnorm_apply vs double"));
}

TEST_CASE("batchnorm_apply rejects bad arguments naming the argument") {
  const Channels ch = random_channels(3, 1);
  const Tensor x = Tensor::zeros({2, 4, 4, 3});
  const ops::BatchNormApplyParams p;
  const auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message([&] { ops::batchnorm_apply(p, x, ch.gamma, ch.beta, ch.mean, Tensor::zeros({4}), Tensor()); })
            .find("running_var") != std::string::npos);
  CHECK(message([&] { ops::batchnorm_apply(p, x, ch.gamma, ch.beta, ch.mean, ch.var, Tensor::zeros({2, 4, 4, 2})); })
            .find("residual") != std::string::npos);
  CHECK(message([&] { ops::batchnorm_apply(p, Tensor::zeros({3}), ch.gamma, ch.beta, ch.mean, ch.var, Tensor()); })
            .find("batchnorm_apply") != std::string::npos);
  ops::BatchNormApplyParams bad = p;
  bad.eps = -1.0f;
  CHECK(message([&] { ops::batchnorm_apply(bad, x, ch.gamma, ch.beta, ch.mean, ch.var, Tensor()); }).find("eps") !=
        std::string::npos);
}

TEST_CASE("BasicBlock inference: the fused epilogue path equals the unfused layers bit for bit") {
  struct Case {
    int64_t in, out;
    int stride;
    bool adapters;
  };
  for (const Case& c : {Case{8, 8, 1, false}, Case{8, 8, 1, true}, Case{6, 10, 2, true}, Case{5, 7, 1, false}}) {
    model::BasicBlock block(c.in, c.out, c.stride, c.adapters);
    test::randomise(block, 50);
    block.fold_adapters = false;  // the adapter fold changes the sum order (test_adapter_fold.cpp)
    const Tensor x = test::random_tensor({2, 9, 7, c.in}, 60);
    block.fuse_inference_epilogues = false;
    const Tensor unfused = block.forward(x, /*training=*/false, /*keep=*/false);
    block.fuse_inference_epilogues = true;
    const Tensor x_before = x.clone();
    const Tensor fused = block.forward(x, false, false);
    INFO("block " << c.in << "->" << c.out << " stride " << c.stride << (c.adapters ? " with adapters" : ""));
    CHECK(bitwise_equal(fused, unfused));
    CHECK(bitwise_equal(x, x_before));  // the epilogues write over convolution outputs, never the input
    // Kept activations (saliency, training) take the layer path, whose backward still works.
    const Tensor kept = block.forward(x, false, /*keep=*/true);
    CHECK(bitwise_equal(kept, unfused));
    CHECK(block.backward(test::random_tensor(kept.shape(), 61), true).shape() == x.shape());
    // Nothing is kept by the fused inference forward: a backward after it is an error.
    (void)block.forward(x, false, false);
    CHECK_THROWS_AS(block.backward(test::random_tensor(kept.shape(), 62), true), Error);
  }
}

// ---------------------------------------------------------------- conv2d_batchnorm

namespace {

struct ConvBnCase {
  Shape x;  // [N,H,W,C]
  int64_t o;
  ops::Conv2dParams p;
};

// Geometries that each CPU path takes when forced: the dot form (C a multiple of 16), the broadcast
// form (O a multiple of 64), 3x3 stride 1 for Winograd, 1x1 for the pointwise GEMM; partial register
// tiles of pixels and channels, strides and paddings.
const ConvBnCase kConvBnCases[] = {
    {{1, 7, 7, 32}, 21, {3, 3, 1, 1, 1, 1}},   // dot (5 x 4 tiles: partial in both)
    {{2, 9, 6, 16}, 7, {3, 3, 2, 2, 1, 1}},    // dot, stride 2, batch 2
    {{1, 11, 11, 3}, 64, {7, 7, 2, 2, 3, 3}},  // broadcast, a stem
    {{3, 5, 7, 5}, 128, {3, 3, 1, 1, 1, 1}},   // broadcast, two channel blocks
    {{2, 6, 5, 16}, 64, {1, 1, 2, 2, 0, 0}},   // a downsample: either form
    {{1, 8, 8, 12}, 10, {3, 3, 1, 1, 1, 1}},   // neither form: Winograd or im2col
    {{2, 4, 4, 8}, 6, {1, 1, 1, 1, 0, 0}},     // pointwise GEMM
};

int64_t winograd_runs(const cpu::ConvPathCounts& c) { return c.winograd[0] + c.winograd[1] + c.winograd[2]; }

}  // namespace

TEST_CASE("conv2d_batchnorm equals conv2d_forward + batchnorm_apply bit for bit on every CPU path") {
  using cpu::ConvAlgo;
  std::vector<std::pair<cpu::CpuIsa, ConvAlgo>> paths;
  for (ConvAlgo algo : {ConvAlgo::automatic, ConvAlgo::im2col, ConvAlgo::winograd})
    paths.emplace_back(cpu::cpu_isa(), algo);
  for (cpu::CpuIsa isa : test::direct_isas()) paths.emplace_back(isa, ConvAlgo::direct);
  uint64_t seed = 100;
  int64_t fused_direct = 0, fused_winograd = 0;
  for (const auto& path : paths) {
    const cpu::CpuIsa isa = path.first;  // not a structured binding: clang 14 cannot capture one (INFO)
    const ConvAlgo algo = path.second;
    const test::ScopedConvPath scope(isa, algo);
    for (const ConvBnCase& k : kConvBnCases) {
      const Shape y_shape{k.x[0], k.p.out_h(k.x[1]), k.p.out_w(k.x[2]), k.o};
      const Tensor x = test::random_tensor(k.x, seed++);
      const Tensor w = test::random_tensor({k.o, k.p.kernel_h, k.p.kernel_w, k.x[3]}, seed++);
      const Tensor r = test::random_tensor(y_shape, seed++);
      const Channels ch = random_channels(k.o, seed);
      seed += 4;
      for (ops::BatchNormStats stats : {ops::BatchNormStats::running, ops::BatchNormStats::saved})
        for (bool relu : {false, true})
          for (bool residual : {false, true}) {
            INFO(cpu::cpu_isa_name(isa) << " algo " << static_cast<int>(algo) << " x " << shape_str(k.x) << " O "
                                        << k.o << (relu ? " relu" : "") << (residual ? " residual" : "")
                                        << (stats == ops::BatchNormStats::saved ? " saved" : " running"));
            ops::BatchNormApplyParams bp = apply_params(stats, relu);
            const Tensor res = residual ? r : Tensor();
            const Tensor expected =
                ops::batchnorm_apply(bp, ops::conv2d_forward(k.p, x, w), ch.gamma, ch.beta, ch.mean, ch.var, res);
            cpu::reset_conv_path_counts();
            bp.in_place = true;  // ignored: the op's input is x, which it never writes
            const Tensor y = ops::conv2d_batchnorm(k.p, bp, x, w, ch.gamma, ch.beta, ch.mean, ch.var, res);
            const cpu::ConvPathCounts counts = cpu::conv_path_counts();
            CHECK(bitwise_equal(y, expected));
            // The BatchNorm ran in the store (the direct forward's or Winograd's output transform)
            // exactly when one of those ran, i.e. never a second pass after them.
            const int64_t winograd = winograd_runs(counts);
            CHECK(counts.fused_epilogue == counts.direct_dot + counts.direct_broadcast + winograd);
            CHECK(winograd <= 1);
            (winograd > 0 ? fused_winograd : fused_direct) += counts.fused_epilogue;
            if (algo == ConvAlgo::im2col) CHECK(counts.fused_epilogue == 0);
            if (algo == ConvAlgo::winograd && k.p.kernel_h == 3 && k.p.stride_h == 1) CHECK(winograd == 1);
          }
    }
  }
  // Forced direct on an AVX2/AVX-512 machine: the five cases a form takes, 8 variants each, per ISA.
  CHECK(fused_direct >= static_cast<int64_t>(test::direct_isas().size()) * 5 * 8);
  // Forced Winograd: the three 3x3 stride-1 cases, 8 variants each.
  CHECK(fused_winograd >= 3 * 8);
}

namespace {

// A ReLU epilogue for a direct kernel call, its per-channel vectors in exact-size blocks
// (AddressSanitizer's red zone right after each); `residual` is the caller's (exact-size) block or null.
struct ExactEpilogue {
  std::vector<float> mean, scale, beta;
  cpu::ConvEpilogue ep;
  ExactEpilogue(const ops::BatchNormApplyParams& bp, const Channels& ch, const float* residual)
      : mean(test::exact_copy(ch.mean)),
        scale(cpu::batchnorm_scale(bp, ch.gamma.f32(), ch.var.f32(), ch.mean.numel())),
        beta(test::exact_copy(ch.beta)) {
    scale.shrink_to_fit();
    ep.mean = mean.data();
    ep.scale = scale.data();
    ep.beta = beta.data();
    ep.residual = residual;
    ep.relu = bp.relu;
  }
  ExactEpilogue(const ExactEpilogue&) = delete;
  ExactEpilogue& operator=(const ExactEpilogue&) = delete;
};

}  // namespace

TEST_CASE("conv2d_batchnorm: the direct forms' epilogue writes every output once and nothing around it") {
  const std::vector<cpu::CpuIsa> isas = test::direct_isas();
  if (isas.empty()) {
    MESSAGE("no AVX2 on this machine: the direct forward is never chosen, nothing to check");
    return;
  }
  for (cpu::CpuIsa isa : isas) {
    for (cpu::DirectForm form : {cpu::DirectForm::dot, cpu::DirectForm::broadcast}) {
      const ConvBnCase& k = form == cpu::DirectForm::dot ? kConvBnCases[0] : kConvBnCases[3];
      CAPTURE(cpu::cpu_isa_name(isa));
      CAPTURE(cpu::direct_form_name(form));
      const cpu::ConvGeometry g(k.p, k.x, k.o);
      const Shape y_shape{g.n, g.oh, g.ow, g.o};
      const Tensor x = test::random_tensor(k.x, 7), w = test::random_tensor({k.o, k.p.kernel_h, k.p.kernel_w, k.x[3]}, 8);
      const Tensor r = test::random_tensor(y_shape, 9, -4.0f, 4.0f);
      const Channels ch = random_channels(k.o, 10);
      const ops::BatchNormApplyParams bp = apply_params(ops::BatchNormStats::running, true);
      const std::vector<float> xe = test::exact_copy(x), we = test::exact_copy(w), re = test::exact_copy(r);
      const ExactEpilogue exact(bp, ch, re.data());
      const cpu::ConvEpilogue& ep = exact.ep;
      test::RedZoned ye(shape_numel(y_shape));
      cpu::conv_direct_forward(g, xe.data(), we.data(), ye.data(), isa, form, ep);
      CHECK(ye.guard_damage() == 0);
      CHECK(ye.unwritten() == 0);
      const test::ScopedConvPath scope(isa, cpu::ConvAlgo::direct);
      CHECK(ye.same_bits(ops::conv2d_batchnorm(k.p, bp, x, w, ch.gamma, ch.beta, ch.mean, ch.var, r)));
      CHECK(ye.same_bits(ops::batchnorm_apply(bp, ops::conv2d_forward(k.p, x, w), ch.gamma, ch.beta, ch.mean, ch.var, r)));
    }
  }
}

TEST_CASE("conv2d_batchnorm rejects bad arguments naming the op and the argument") {
  const ops::Conv2dParams p{3, 3, 1, 1, 1, 1};
  const Tensor x = test::random_tensor({1, 5, 5, 4}, 1), w = test::random_tensor({6, 3, 3, 4}, 2);
  const Channels ch = random_channels(6, 3);
  const ops::BatchNormApplyParams bp = apply_params(ops::BatchNormStats::running, true);
  test::require_error([&] { ops::conv2d_batchnorm(p, bp, x, test::random_tensor({6, 3, 3, 5}, 4), ch.gamma, ch.beta,
                                                  ch.mean, ch.var, Tensor()); },
                      {"conv2d_batchnorm", "x", "4 channels", "w"});
  const Channels wrong = random_channels(4, 5);
  test::require_error([&] { ops::conv2d_batchnorm(p, bp, x, w, wrong.gamma, ch.beta, ch.mean, ch.var, Tensor()); },
                      {"conv2d_batchnorm", "gamma", "expected [6]"});
  test::require_error([&] { ops::conv2d_batchnorm(p, bp, x, w, ch.gamma, ch.beta, ch.mean, wrong.var, Tensor()); },
                      {"conv2d_batchnorm", "running_var", "expected [6]"});
  test::require_error([&] { ops::conv2d_batchnorm(p, bp, x, w, ch.gamma, ch.beta, ch.mean, ch.var,
                                                  test::random_tensor({1, 5, 5, 4}, 6)); },
                      {"conv2d_batchnorm", "residual", "[1,5,5,6]"});
  ops::BatchNormApplyParams bad_eps = bp;
  bad_eps.eps = -1.0f;
  test::require_error([&] { ops::conv2d_batchnorm(p, bad_eps, x, w, ch.gamma, ch.beta, ch.mean, ch.var, Tensor()); },
                      {"conv2d_batchnorm", "eps"});
}

// ---------------------------------------------------------------- conv2d_batchnorm_train

TEST_CASE("conv2d_batchnorm_train on the CPU is conv2d_forward, batchnorm_forward_train, add_relu / relu, bit for bit") {
  uint64_t seed = 700;
  for (const test::ConvBnCase& k : test::kConvBnCases) {
    const test::ConvBnInputs in = test::random_conv_bn_inputs(k, seed);
    seed += 10;
    const Tensor &x = in.x, &w = in.w, &r = in.residual;
    const Channels ch{in.gamma, in.beta, in.mean, in.var};
    for (const bool relu : {false, true}) {
      for (const bool residual : {false, true}) {
        const std::string what = shape_str(k.x) + (relu ? " relu" : "") + (residual ? " residual" : "");
        CAPTURE(what);
        ops::BatchNormParams bn;
        Tensor rm = ch.mean.clone(), rv = ch.var.clone(), rm2 = ch.mean.clone(), rv2 = ch.var.clone();
        const ops::ConvBatchNormTrainOut got =
            ops::conv2d_batchnorm_train(k.p, bn, relu, x, w, ch.gamma, ch.beta, rm, rv, residual ? r : Tensor());
        const Tensor conv = ops::conv2d_forward(k.p, x, w);
        const ops::BatchNormTrainOut b = ops::batchnorm_forward_train(bn, conv, ch.gamma, ch.beta, rm2, rv2);
        Tensor y = b.y;
        if (residual) y = relu ? ops::add_relu(y, r) : ops::add(y, r);
        else if (relu) y = ops::relu_forward(y);
        CHECK(bitwise_equal(got.conv, conv));
        CHECK(bitwise_equal(got.save_mean, b.save_mean));
        CHECK(bitwise_equal(got.save_invstd, b.save_invstd));
        CHECK(bitwise_equal(got.y, y));
        CHECK(bitwise_equal(rm, rm2));
        CHECK(bitwise_equal(rv, rv2));
      }
    }
  }
}

TEST_CASE("ResNet-18 training on the CPU: the fused conv+BatchNorm path is the layer-by-layer one, bit for bit") {
  model::NamedTensors grads[2], state[2];
  Tensor out[2];
  for (int fused = 0; fused < 2; ++fused) {
    model::ModelConfig config;
    config.dropout = 0.0f;
    model::ResNet18 net(config);
    net.set_training(true);
    net.set_fuse_training_epilogues(fused == 1);
    const Tensor x = test::random_tensor({2, 32, 32, 3}, 41);
    const Tensor target = test::random_tensor({2, 1}, 42);
    net.zero_grad();
    out[fused] = net.forward(x);
    net.backward(ops::mse_loss_backward(out[fused], target));
    grads[fused] = net.grads_pytorch_layout();
    state[fused] = net.state_dict();
  }
  CHECK(bitwise_equal(out[1], out[0]));
  REQUIRE(grads[0].size() == grads[1].size());
  for (std::size_t i = 0; i < grads[0].size(); ++i) {
    INFO("grad " << grads[0][i].first);
    CHECK(bitwise_equal(grads[1][i].second, grads[0][i].second));
  }
  REQUIRE(state[0].size() == state[1].size());
  for (std::size_t i = 0; i < state[0].size(); ++i) {
    INFO("state " << state[0][i].first);
    CHECK(bitwise_equal(state[1][i].second, state[0][i].second));
  }
}

TEST_CASE("conv2d_batchnorm_train rejects bad arguments naming the op and the argument") {
  const ops::Conv2dParams p{3, 3, 1, 1, 1, 1};
  const Tensor x = test::random_tensor({2, 5, 5, 4}, 1), w = test::random_tensor({6, 3, 3, 4}, 2);
  const Channels ch = random_channels(6, 3), wrong = random_channels(4, 5);
  Tensor rm = ch.mean.clone(), rv = ch.var.clone(), wrong_var = wrong.var.clone();
  const ops::BatchNormParams bn;
  test::require_error([&] { ops::conv2d_batchnorm_train(p, bn, true, x, test::random_tensor({6, 3, 3, 5}, 4), ch.gamma,
                                                        ch.beta, rm, rv, Tensor()); },
                      {"conv2d_batchnorm_train", "x", "4 channels", "w"});
  test::require_error([&] { ops::conv2d_batchnorm_train(p, bn, true, x, w, wrong.gamma, ch.beta, rm, rv, Tensor()); },
                      {"conv2d_batchnorm_train", "gamma", "expected [6]"});
  test::require_error([&] { ops::conv2d_batchnorm_train(p, bn, true, x, w, ch.gamma, ch.beta, rm, wrong_var, Tensor()); },
                      {"conv2d_batchnorm_train", "running_var", "expected [6]"});
  test::require_error([&] { ops::conv2d_batchnorm_train(p, bn, true, x, w, ch.gamma, ch.beta, rm, rv,
                                                        test::random_tensor({2, 5, 5, 4}, 6)); },
                      {"conv2d_batchnorm_train", "residual", "[2,5,5,6]"});
  ops::BatchNormParams bad_momentum;
  bad_momentum.momentum = std::nanf("");
  test::require_error([&] { ops::conv2d_batchnorm_train(p, bad_momentum, true, x, w, ch.gamma, ch.beta, rm, rv, Tensor()); },
                      {"conv2d_batchnorm_train", "momentum"});
  // One value per channel: the unbiased running variance would divide by zero.
  const ops::Conv2dParams valid{3, 3, 1, 1, 0, 0};
  const Tensor one_pixel = test::random_tensor({1, 3, 3, 4}, 7);
  test::require_error([&] { ops::conv2d_batchnorm_train(valid, bn, true, one_pixel, w, ch.gamma, ch.beta, rm, rv, Tensor()); },
                      {"conv2d_batchnorm_train", "1 value(s) per channel", "at least 2"});
  // Nothing was changed by the refusals.
  CHECK(bitwise_equal(rm, ch.mean));
  CHECK(bitwise_equal(rv, ch.var));
}

// ---------------------------------------------------------------- Winograd's epilogue

namespace {

// Winograd's tile size and chunking for one scope (with ScopedConvPath for the algorithm and ISA),
// restored even when a check throws.
class ScopedWinograd {
 public:
  ScopedWinograd(int tile, const cpu::WinogradChunking& chunking)
      : tiles_(cpu::winograd_tiles()), chunking_(cpu::winograd_chunking()) {
    cpu::set_winograd_tiles(cpu::WinogradTiles{tile, tiles_.backward_data});
    cpu::set_winograd_chunking(chunking);
  }
  ~ScopedWinograd() {
    cpu::set_winograd_tiles(tiles_);
    cpu::set_winograd_chunking(chunking_);
  }
  ScopedWinograd(const ScopedWinograd&) = delete;
  ScopedWinograd& operator=(const ScopedWinograd&) = delete;

 private:
  cpu::WinogradTiles tiles_;
  cpu::WinogradChunking chunking_;
};

std::vector<cpu::CpuIsa> all_isas() {  // Winograd has a plain variant too
  std::vector<cpu::CpuIsa> out;
  for (cpu::CpuIsa isa : {cpu::CpuIsa::plain, cpu::CpuIsa::avx2, cpu::CpuIsa::avx512})
    if (cpu::cpu_isa_available(isa)) out.push_back(isa);
  return out;
}

// 3x3 stride 1 with output sides that are not multiples of 2 or 4 (partial tiles at the right and
// bottom edges for both tile sizes), paddings 0..2, and channel counts off the vector widths.
const ConvBnCase kWinogradCases[] = {
    {{2, 7, 9, 16}, 24, {3, 3, 1, 1, 1, 1}},   // 7 x 9 out
    {{1, 5, 6, 8}, 17, {3, 3, 1, 1, 0, 0}},    // 3 x 4 out
    {{3, 11, 13, 5}, 7, {3, 3, 1, 1, 2, 2}},   // 13 x 15 out
    {{1, 6, 10, 32}, 64, {3, 3, 1, 1, 1, 0}},  // 6 x 8 out: whole tiles, unequal padding
};

// Default chunks (one chunk: the whole batch), one tile per chunk, and 5 (chunks ending mid-row).
const cpu::WinogradChunking kChunkings[] = {{}, {1, 1, 0}, {1, 5, 0}};

}  // namespace

TEST_CASE("conv2d_batchnorm on Winograd: the output transform applies the epilogue, same bits, every ISA, tile and chunking") {
  uint64_t seed = 500;
  int64_t fused = 0;
  for (cpu::CpuIsa isa : all_isas()) {
    const test::ScopedConvPath path(isa, cpu::ConvAlgo::winograd);
    for (int tile : {2, 4}) {
      for (const cpu::WinogradChunking& chunking : kChunkings) {
        const ScopedWinograd wino(tile, chunking);
        for (const ConvBnCase& k : kWinogradCases) {
          const Shape y_shape{k.x[0], k.p.out_h(k.x[1]), k.p.out_w(k.x[2]), k.o};
          const Tensor x = test::random_tensor(k.x, seed++);
          const Tensor w = test::random_tensor({k.o, 3, 3, k.x[3]}, seed++);
          const Tensor r = test::random_tensor(y_shape, seed++, -2.0f, 2.0f);
          const Channels ch = random_channels(k.o, seed);
          seed += 4;
          for (ops::BatchNormStats stats : {ops::BatchNormStats::running, ops::BatchNormStats::saved})
            for (bool relu : {false, true})
              for (bool residual : {false, true}) {
                INFO(cpu::cpu_isa_name(isa) << " F(" << tile << "x" << tile << ") chunk min_tiles " << chunking.min_tiles
                                            << " x " << shape_str(k.x) << " O " << k.o << (relu ? " relu" : "")
                                            << (residual ? " residual" : "")
                                            << (stats == ops::BatchNormStats::saved ? " saved" : " running"));
                const ops::BatchNormApplyParams bp = apply_params(stats, relu);
                const Tensor res = residual ? r : Tensor();
                const Tensor expected =
                    ops::batchnorm_apply(bp, ops::conv2d_forward(k.p, x, w), ch.gamma, ch.beta, ch.mean, ch.var, res);
                cpu::reset_conv_path_counts();
                const Tensor y = ops::conv2d_batchnorm(k.p, bp, x, w, ch.gamma, ch.beta, ch.mean, ch.var, res);
                const cpu::ConvPathCounts counts = cpu::conv_path_counts();
                CHECK(bitwise_equal(y, expected));
                // One Winograd forward, with this ISA and tile, that applied the epilogue itself.
                CHECK(counts.winograd[static_cast<int>(isa)] == 1);
                CHECK(winograd_runs(counts) == 1);
                CHECK(counts.winograd_m[tile] == 1);
                CHECK(counts.fused_epilogue == 1);
                CHECK(counts.im2col + counts.direct_dot + counts.direct_broadcast + counts.pointwise == 0);
                fused += counts.fused_epilogue;
              }
        }
      }
    }
  }
  CHECK(fused == static_cast<int64_t>(all_isas().size()) * 2 * 3 * 4 * 8);
}

TEST_CASE("winograd_forward with an epilogue writes every output once and nothing around it") {
  for (cpu::CpuIsa isa : all_isas()) {
    const test::ScopedConvPath path(isa, cpu::ConvAlgo::winograd);
    for (int tile : {2, 4}) {
      for (const cpu::WinogradChunking& chunking : {kChunkings[0], kChunkings[2]}) {
        const ScopedWinograd wino(tile, chunking);
        for (const ConvBnCase& k : {kWinogradCases[0], kWinogradCases[2]}) {
          for (bool residual : {false, true}) {
            CAPTURE(cpu::cpu_isa_name(isa));
            CAPTURE(tile);
            CAPTURE(chunking.min_tiles);
            CAPTURE(shape_str(k.x));
            CAPTURE(residual);
            const cpu::ConvGeometry g(k.p, k.x, k.o);
            const Shape y_shape{g.n, g.oh, g.ow, g.o};
            const Tensor x = test::random_tensor(k.x, 7), w = test::random_tensor({k.o, 3, 3, k.x[3]}, 8);
            const Tensor r = test::random_tensor(y_shape, 9, -4.0f, 4.0f);
            const Channels ch = random_channels(k.o, 10);
            const ops::BatchNormApplyParams bp = apply_params(ops::BatchNormStats::running, true);
            const std::vector<float> xe = test::exact_copy(x), we = test::exact_copy(w), re = test::exact_copy(r);
            const ExactEpilogue exact(bp, ch, residual ? re.data() : nullptr);
            const cpu::ConvEpilogue& ep = exact.ep;
            test::RedZoned ye(shape_numel(y_shape));
            cpu::winograd_forward(g, xe.data(), we.data(), ye.data(), ep);
            CHECK(ye.guard_damage() == 0);
            CHECK(ye.unwritten() == 0);
            const Tensor res = residual ? r : Tensor();
            CHECK(ye.same_bits(ops::conv2d_batchnorm(k.p, bp, x, w, ch.gamma, ch.beta, ch.mean, ch.var, res)));
            CHECK(ye.same_bits(
                ops::batchnorm_apply(bp, ops::conv2d_forward(k.p, x, w), ch.gamma, ch.beta, ch.mean, ch.var, res)));
          }
        }
      }
    }
  }
}

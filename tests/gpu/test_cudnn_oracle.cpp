// cuDNN as the oracle (engineering-lessons.md, item 9): our CUDA convolution (forward, backward-data,
// backward-weight) and batch norm (training forward and backward) against cuDNN on the same device
// inputs, on every distinct ResNet-18 layer shape at 224x224 and batch 8. cuDNN runs in our layouts
// (NHWC activations, OHWI weights), float32 with FMA math (no TF32) and direct-summation
// algorithms, so the two sides differ only in summation order.
//
// Tolerances follow from that: a float32 sum of K products of magnitude <= 1 carries a rounding
// error that grows with K, so per element |ours - cuDNN| <= FLT_EPSILON * K + 1e-5 * |cuDNN| and the
// normalised squared error <= max(1e-12, 1e-13 * K) (about 40x the worst case of a sequential sum;
// any indexing mistake is many orders of magnitude above). Every comparison prints its max error
// and how much of each tolerance it used.
//
// Real GPU only: the emulated-device build of this file, a build without cuDNN and a machine
// without a GPU report the binary as skipped.
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model/resnet18_shapes.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"

#if defined(AE_HAVE_CUDNN) && !defined(AE_EMULATED_DEVICE)
#include "kernels/cuda/conv_math.h"
#include "tests/gpu/cudnn/cudnn_reference.h"

using namespace ae;
using namespace ae::gputest;

namespace {

constexpr int64_t kBatch = 8;

using ConvLayer = ae::model::ConvShape;
constexpr const auto& kConvLayers = ae::model::kResNet18ConvShapes;

// The BatchNorm2d inputs of ResNet-18 at 224x224: after conv1, and in each stage.
struct BnLayer {
  const char* name;
  int64_t hw, c;
};
const BnLayer kBnLayers[] = {
    {"bn1", 112, 64}, {"layer1 bn", 56, 64}, {"layer2 bn", 28, 128}, {"layer3 bn", 14, 256}, {"layer4 bn", 7, 512},
};

// Tolerance for a float32 sum of `terms` products of magnitude <= 1 (see the file comment).
test::Tolerance sum_tolerance(double terms) {
  return {FLT_EPSILON * terms, 1e-5, std::max(1e-12, 1e-13 * terms)};
}

// Max over elements of |got - ref| / (atol + rtol*|ref|), as a percentage of the tolerance.
double percent_of_elementwise_tolerance(const std::vector<float>& got, const std::vector<float>& ref,
                                        const test::Tolerance& tol) {
  double worst = 0;
  for (std::size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    const double allowed = tol.atol + tol.rtol * std::fabs(static_cast<double>(ref[i]));
    const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
    worst = std::max(worst, std::isfinite(d) ? d / allowed : HUGE_VAL);
  }
  return 100.0 * worst;
}

// Compares ours against cuDNN (both device tensors), prints one line, and fails the test case
// (with the comparison's own report) when outside the tolerance.
void require_matches_cudnn(const Tensor& ours, const Tensor& cudnn, const test::Tolerance& tol, const std::string& what) {
  REQUIRE(ours.device().is_cuda());
  REQUIRE(ours.shape() == cudnn.shape());
  const std::vector<float> got = ours.to_vector(), ref = cudnn.to_vector();
  const test::CompareResult r = test::compare(got, std::vector<double>(ref.begin(), ref.end()), tol, what);
  std::printf("  %-44s max|diff| %.3e  nmse %.3e  %6.2f%% of elementwise tol, %6.2f%% of nmse tol  %s\n",
              what.c_str(), r.max_abs_err, r.nmse, percent_of_elementwise_tolerance(got, ref, tol),
              100.0 * r.nmse / tol.max_nmse, r.ok ? "ok" : "FAIL");
  AE_REQUIRE_OK(r);
}

// Everything one conv layer's three passes need, on the device, with cuDNN's algorithms chosen.
struct ConvCase {
  ops::Conv2dParams p;
  Tensor x, w, dy;
  cudnn_ref::Conv cudnn;
  Tensor y_ref, dx_ref, dw_ref;

  ConvCase(cudnn_ref::Handle& handle, const ConvLayer& l, uint64_t seed)
      : p(params(l)),
        x(to_device(test::random_tensor({kBatch, l.hw, l.hw, l.c}, seed))),
        w(to_device(test::random_tensor({l.o, l.k, l.k, l.c}, seed + 1))),
        dy(to_device(test::random_tensor({kBatch, p.out_h(l.hw), p.out_w(l.hw), l.o}, seed + 2))),
        cudnn(handle, p, x.shape(), l.o),
        y_ref(Tensor::empty(cudnn.y_shape(), DType::f32, device())),
        dx_ref(Tensor::empty(cudnn.x_shape(), DType::f32, device())),
        dw_ref(Tensor::empty(cudnn.w_shape(), DType::f32, device())) {
    cudnn.choose_algorithms(cudnn_ref::AlgoPolicy::precise, x, w, dy, y_ref, dx_ref, dw_ref);
  }
  static ops::Conv2dParams params(const ConvLayer& l) {
    ops::Conv2dParams p;
    p.kernel_h = p.kernel_w = l.k;
    p.stride_h = p.stride_w = l.stride;
    p.pad_h = p.pad_w = l.pad;
    return p;
  }
  std::string label(const ConvLayer& l, cudnn_ref::ConvPass pass) const {
    return std::string(cudnn_ref::pass_name(pass)) + " " + l.name + " [" + cudnn.algo_name(pass) + "]";
  }
};

bool announce() {
  static const bool once = [] {
    std::printf("oracle: %s; batch %lld, NHWC f32, FMA math (TF32 off)\n", cudnn_ref::version_string().c_str(),
                static_cast<long long>(kBatch));
    return true;
  }();
  return once;
}

}  // namespace

TEST_CASE("conv2d forward matches cuDNN on every ResNet-18 layer") {
  AE_GPU_TEST_PRELUDE();
  announce();
  cudnn_ref::Handle handle;  // per test case: torn down before the CUDA runtime is, at exit
  const cuda::ScopedConvMath f32(cuda::ConvMath::f32);  // cuDNN runs FMA math: compare like with like
  uint64_t seed = 100;
  for (const ConvLayer& l : kConvLayers) {
    ConvCase c(handle, l, seed += 10);
    c.cudnn.forward(c.x, c.w, c.y_ref);
    const Tensor y = ops::conv2d_forward(c.p, c.x, c.w);
    require_matches_cudnn(y, c.y_ref, sum_tolerance(static_cast<double>(l.k * l.k * l.c)),
                          c.label(l, cudnn_ref::ConvPass::forward));
    require_guards_intact();
  }
}

TEST_CASE("conv2d backward-data matches cuDNN on every ResNet-18 layer") {
  AE_GPU_TEST_PRELUDE();
  announce();
  cudnn_ref::Handle handle;  // per test case: torn down before the CUDA runtime is, at exit
  const cuda::ScopedConvMath f32(cuda::ConvMath::f32);  // cuDNN runs FMA math: compare like with like
  uint64_t seed = 200;
  for (const ConvLayer& l : kConvLayers) {
    ConvCase c(handle, l, seed += 10);
    c.cudnn.backward_data(c.dy, c.w, c.dx_ref);
    const Tensor dx = ops::conv2d_backward_data(c.p, c.dy, c.w, c.x.shape());
    require_matches_cudnn(dx, c.dx_ref, sum_tolerance(static_cast<double>(l.k * l.k * l.o)),
                          c.label(l, cudnn_ref::ConvPass::backward_data));
    require_guards_intact();
  }
}

TEST_CASE("conv2d backward-weight matches cuDNN on every ResNet-18 layer") {
  AE_GPU_TEST_PRELUDE();
  announce();
  cudnn_ref::Handle handle;  // per test case: torn down before the CUDA runtime is, at exit
  const cuda::ScopedConvMath f32(cuda::ConvMath::f32);  // cuDNN runs FMA math: compare like with like
  uint64_t seed = 300;
  for (const ConvLayer& l : kConvLayers) {
    ConvCase c(handle, l, seed += 10);
    c.cudnn.backward_weight(c.x, c.dy, c.dw_ref);
    const Tensor dw = ops::conv2d_backward_weight(c.p, c.x, c.dy, c.w.shape());
    const double rows = static_cast<double>(shape_numel(c.dy.shape()) / c.dy.dim(-1));  // N*OH*OW
    require_matches_cudnn(dw, c.dw_ref, sum_tolerance(rows), c.label(l, cudnn_ref::ConvPass::backward_weight));
    require_guards_intact();
  }
}

TEST_CASE("batchnorm training forward and backward match cuDNN on every ResNet-18 BatchNorm2d shape") {
  AE_GPU_TEST_PRELUDE();
  announce();
  cudnn_ref::Handle handle;  // per test case: torn down before the CUDA runtime is, at exit
  const cuda::ScopedConvMath f32(cuda::ConvMath::f32);  // cuDNN runs FMA math: compare like with like
  uint64_t seed = 400;
  for (const BnLayer& l : kBnLayers) {
    seed += 10;
    const ops::BatchNormParams p;  // eps 1e-5, momentum 0.1: PyTorch's defaults
    // x with a common offset (mean 1, |mean| ~ std) so the variance is not the raw second moment.
    const Tensor x = to_device(test::random_tensor({kBatch, l.hw, l.hw, l.c}, seed, -1.0f, 3.0f));
    const Tensor gamma = to_device(test::random_tensor({l.c}, seed + 1, 0.5f, 1.5f));
    const Tensor beta = to_device(test::random_tensor({l.c}, seed + 2, -0.5f, 0.5f));
    const Tensor dy = to_device(test::random_tensor({kBatch, l.hw, l.hw, l.c}, seed + 3));
    const Tensor mean0 = test::random_tensor({l.c}, seed + 4, -0.1f, 0.1f);
    const Tensor var0 = test::random_tensor({l.c}, seed + 5, 0.5f, 1.5f);
    Tensor our_mean = to_device(mean0), our_var = to_device(var0);
    Tensor ref_mean = to_device(mean0), ref_var = to_device(var0);

    const ops::BatchNormTrainOut ours = ops::batchnorm_forward_train(p, x, gamma, beta, our_mean, our_var);
    const ops::BatchNormTrainOut ref = cudnn_ref::batchnorm_forward_train(handle, p, x, gamma, beta, ref_mean, ref_var);
    const double rows = static_cast<double>(kBatch * l.hw * l.hw);
    const std::string at = std::string(" ") + l.name + " " + shape_str(x.shape());
    // Normalised outputs and per-channel statistics: a few roundings after a reduction (ours in
    // double, cuDNN's in float: ~1e-6 relative). Biased instead of unbiased running_var would be off
    // by M/(M-1): 2.5e-3 relative at layer4 (M = 392), far outside.
    const test::Tolerance elementwise{2e-5, 1e-4, 1e-10};
    const test::Tolerance statistics{1e-6, 1e-5, 1e-10};
    require_matches_cudnn(ours.y, ref.y, elementwise, "bn fwd y" + at);
    require_matches_cudnn(ours.save_mean, ref.save_mean, statistics, "bn fwd mean" + at);
    require_matches_cudnn(ours.save_invstd, ref.save_invstd, statistics, "bn fwd invstd" + at);
    require_matches_cudnn(our_mean, ref_mean, statistics, "bn fwd running_mean" + at);
    require_matches_cudnn(our_var, ref_var, statistics, "bn fwd running_var (unbiased)" + at);

    // Each side's backward from its own saved statistics (they agree to the tolerance above).
    const ops::BatchNormGrads g = ops::batchnorm_backward_train(x, dy, gamma, ours.save_mean, ours.save_invstd);
    const ops::BatchNormGrads gr =
        cudnn_ref::batchnorm_backward_train(handle, p, x, dy, gamma, ref.save_mean, ref.save_invstd);
    require_matches_cudnn(g.dx, gr.dx, elementwise, "bn bwd dx" + at);
    // dgamma = sum(dy * xhat), dbeta = sum(dy) over N*H*W rows: float sums of that many terms (|xhat| <~ 2).
    require_matches_cudnn(g.dgamma, gr.dgamma, sum_tolerance(2 * rows), "bn bwd dgamma" + at);
    require_matches_cudnn(g.dbeta, gr.dbeta, sum_tolerance(rows), "bn bwd dbeta" + at);
    require_guards_intact();
  }
}

#else  // no cuDNN in this build, or the emulated device: nothing here can run

TEST_CASE("cuDNN oracle") {
#if defined(AE_EMULATED_DEVICE)
  ae::test::skip_binary("the cuDNN oracle runs on a real GPU only (this is the emulated-device build)");
#else
  ae::test::skip_binary("this build did not find cuDNN (cudnn.h / libcudnn): the cuDNN oracle was not compiled");
#endif
}

#endif

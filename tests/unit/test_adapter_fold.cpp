// BasicBlock inference with each residual adapter folded into the centre tap of its 3x3 conv
// (model/basic_block.h): equal to the unfused layers to float rounding for stride-1 and stride-2
// blocks with and without downsample; never stale after the weights change (state-dict load,
// reassignment, optimiser step, explicit invalidation after an in-place write); the CPU training
// fold (forward and data gradient through the folded weight) equal to the separate adapters to
// rounding, every weight gradient included.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model/basic_block.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/random_block.h"

using namespace ae;
using ae::test::bitwise_equal;

namespace {


Tensor unfused_inference(model::BasicBlock& b, const Tensor& x) {
  b.fuse_inference_epilogues = false;
  const Tensor y = b.forward(x, /*training=*/false, /*keep=*/false);
  b.fuse_inference_epilogues = true;
  return y;
}

// max |got - ref| <= 1e-5 * max |ref|: the fold changes only the order of the float sums.
void check_close_to_scale(const Tensor& got, const Tensor& ref, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == ref.shape());
  const std::vector<float> g = got.to_vector(), r = ref.to_vector();
  float scale = 0.0f, worst = 0.0f;
  for (std::size_t i = 0; i < r.size(); ++i) {
    scale = std::max(scale, std::fabs(r[i]));
    worst = std::max(worst, std::fabs(g[i] - r[i]));
  }
  REQUIRE(scale > 0.0f);
  CHECK(worst <= 1e-5f * scale);
}

struct Case {
  int64_t in, out;
  int stride;
};
// stride 1 without downsample, stride 1 with (channel change), stride 2 with downsample.
const Case kCases[] = {{8, 8, 1}, {5, 7, 1}, {6, 10, 2}, {4, 4, 2}};

}  // namespace

TEST_CASE("adapter fold: fused inference equals the unfused layers to float rounding") {
  uint64_t seed = 10;
  for (const Case& c : kCases) {
    model::BasicBlock block(c.in, c.out, c.stride, /*adapters=*/true);
    test::randomise(block, seed);
    const Tensor x = test::random_tensor({2, 9, 7, c.in}, seed + 100);
    seed += 20;
    const std::string what = std::to_string(c.in) + "->" + std::to_string(c.out) + " stride " +
                             std::to_string(c.stride) + (block.has_downsample() ? " downsample" : "");
    const Tensor ref = unfused_inference(block, x);
    const Tensor fused = block.forward(x, false, false);
    check_close_to_scale(fused, ref, what);
    // Not the unfolded fused path by accident: the fold changes the rounding somewhere...
    block.fold_adapters = false;
    const Tensor unfolded = block.forward(x, false, false);
    block.fold_adapters = true;
    CHECK(bitwise_equal(unfolded, ref));
    // ...and without the adapters' contribution the output is far off (the fold includes them).
    model::BasicBlock no_adapter = block;
    no_adapter.adapter1.weight.value = Tensor::zeros(block.adapter1.weight.value.shape());
    no_adapter.adapter2.weight.value = Tensor::zeros(block.adapter2.weight.value.shape());
    const std::vector<float> a = no_adapter.forward(x, false, false).to_vector(), r = ref.to_vector();
    float diff = 0.0f;
    for (std::size_t i = 0; i < r.size(); ++i) diff = std::max(diff, std::fabs(a[i] - r[i]));
    CHECK(diff > 1e-2f);
    // A second call reuses the cached fold and gives the same bits.
    CHECK(bitwise_equal(block.forward(x, false, false), fused));
  }
}

TEST_CASE("adapter fold: the folded weight follows every change of the weights") {
  model::BasicBlock block(6, 10, 2, /*adapters=*/true);
  test::randomise(block, 200);
  const Tensor x = test::random_tensor({2, 9, 7, 6}, 201);
  (void)block.forward(x, false, false);  // builds the cache

  SUBCASE("loading a state dict (in-place writes through the state entries)") {
    model::BasicBlock other(6, 10, 2, true);
    test::randomise(other, 300);
    std::vector<model::StateEntry> src, dst;
    other.list_state("", src);
    block.list_state("", dst);
    REQUIRE(src.size() == dst.size());
    for (std::size_t i = 0; i < src.size(); ++i) {
      if (src[i].param != nullptr) dst[i].param->value.copy_from(src[i].param->value);
      if (src[i].buffer != nullptr) dst[i].buffer->copy_from(*src[i].buffer);
    }
    check_close_to_scale(block.forward(x, false, false), unfused_inference(other, x), "after load");
  }
  SUBCASE("assigning new weight tensors") {
    block.adapter2.weight.value = test::random_tensor(block.adapter2.weight.value.shape(), 400, -0.5f, 0.5f);
    block.conv1.weight.value = test::random_tensor(block.conv1.weight.value.shape(), 401, -0.2f, 0.2f);
    check_close_to_scale(block.forward(x, false, false), unfused_inference(block, x), "after assignment");
  }
  SUBCASE("an optimiser step after a training backward") {
    const Tensor y = block.forward(x, /*training=*/true, /*keep=*/true);
    (void)block.backward(test::random_tensor(y.shape(), 500), true);
    // Gradients present: an eval forward between backward and step must not cache a fold.
    check_close_to_scale(block.forward(x, false, false), unfused_inference(block, x), "grads pending");
    for (model::Conv2d* conv : {&block.conv1, &block.adapter1, &block.adapter2}) {
      REQUIRE(conv->weight.grad.defined());
      ops::add_inplace(conv->weight.value, conv->weight.grad, -0.5f);  // an SGD step
      conv->weight.grad = Tensor();                                    // zero_grad
    }
    check_close_to_scale(block.forward(x, false, false), unfused_inference(block, x), "after step");
  }
  SUBCASE("an in-place write by other means, then invalidate_folded_weights()") {
    ops::add_inplace(block.adapter1.weight.value, test::random_tensor(block.adapter1.weight.value.shape(), 600));
    block.invalidate_folded_weights();
    check_close_to_scale(block.forward(x, false, false), unfused_inference(block, x), "after invalidate");
  }
}

TEST_CASE("adapter fold in training (CPU): outputs and every gradient equal the separate adapters to rounding") {
  uint64_t seed = 700;
  for (const Case& c : kCases) {
    for (bool convs_train : {false, true}) {  // adapters mode (frozen convs) and full fine-tuning
      model::BasicBlock block(c.in, c.out, c.stride, /*adapters=*/true);
      test::randomise(block, seed);
      block.conv1.weight.trainable = block.conv2.weight.trainable = convs_train;
      model::BasicBlock twin = block;
      twin.fold_adapters = false;
      const Tensor x = test::random_tensor({2, 9, 7, c.in}, seed + 1);
      seed += 10;
      const std::string what = std::to_string(c.in) + "->" + std::to_string(c.out) + " stride " +
                               std::to_string(c.stride) + (convs_train ? " convs trainable" : " convs frozen");
      (void)block.forward(x, false, false);  // a cached inference fold must not leak into training
      const Tensor y = block.forward(x, /*training=*/true, /*keep=*/true);
      const Tensor y_twin = twin.forward(x, true, true);
      check_close_to_scale(y, y_twin, what + " output");
      const Tensor dy = test::random_tensor(y.shape(), seed + 2);
      check_close_to_scale(block.backward(dy, true), twin.backward(dy, true), what + " dx");
      check_close_to_scale(block.adapter1.weight.grad, twin.adapter1.weight.grad, what + " adapter1 grad");
      check_close_to_scale(block.adapter2.weight.grad, twin.adapter2.weight.grad, what + " adapter2 grad");
      check_close_to_scale(block.bn1.weight.grad, twin.bn1.weight.grad, what + " bn1 grad");
      CHECK(block.conv1.weight.grad.defined() == convs_train);
      if (convs_train) check_close_to_scale(block.conv1.weight.grad, twin.conv1.weight.grad, what + " conv1 grad");
      // Really folded: the separate-adapter path rounds differently somewhere.
      CHECK_FALSE(bitwise_equal(y, y_twin));
    }
  }
}

TEST_CASE("adapter fold: kept eval activations and the unfolded training path") {
  model::BasicBlock block(6, 10, 2, /*adapters=*/true);
  test::randomise(block, 700);
  block.fold_adapters = false;
  model::BasicBlock twin = block;
  const Tensor x = test::random_tensor({2, 9, 7, 6}, 701);
  (void)block.forward(x, false, false);
  const Tensor y = block.forward(x, /*training=*/true, /*keep=*/true);
  const Tensor y_twin = twin.forward(x, true, true);
  CHECK(bitwise_equal(y, y_twin));
  const Tensor dy = test::random_tensor(y.shape(), 702);
  CHECK(bitwise_equal(block.backward(dy, true), twin.backward(dy, true)));
  CHECK(bitwise_equal(block.adapter1.weight.grad, twin.adapter1.weight.grad));
  CHECK(bitwise_equal(block.conv2.weight.grad, twin.conv2.weight.grad));
  // Kept eval activations with the fold off take the layer path, bit for bit.
  CHECK(bitwise_equal(block.forward(x, false, true), unfused_inference(twin, x)));
}

TEST_CASE("conv_fold_centre_tap: A added at the centre tap, every other tap copied; bad shapes refused") {
  for (const auto& [o, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 3}, {7, 130}}) {
    const Tensor w = test::random_tensor({o, 3, 3, c}, static_cast<uint64_t>(o * 100 + c));
    const Tensor a = test::random_tensor({o, 1, 1, c}, static_cast<uint64_t>(o * 100 + c + 1));
    const Tensor f = ops::conv_fold_centre_tap(w, a);
    REQUIRE(f.shape() == w.shape());
    bool all = true;
    for (int64_t oi = 0; oi < o; ++oi)
      for (int64_t tap = 0; tap < 9; ++tap)
        for (int64_t ci = 0; ci < c; ++ci) {
          const int64_t i = (oi * 9 + tap) * c + ci;
          const float expect = tap == 4 ? w.f32()[i] + a.f32()[oi * c + ci] : w.f32()[i];
          all &= f.f32()[i] == expect;
        }
    CHECK(all);
  }
  const Tensor w = test::random_tensor({4, 3, 3, 2}, 1);
  test::require_error([&] { (void)ops::conv_fold_centre_tap(w, test::random_tensor({4, 1, 1, 3}, 2)); },
                      {"conv_fold_centre_tap", "a"});
  test::require_error([&] { (void)ops::conv_fold_centre_tap(test::random_tensor({4, 1, 1, 2}, 3), w); },
                      {"conv_fold_centre_tap", "3x3"});
  test::require_error([&] { (void)ops::conv_fold_centre_tap(Tensor::zeros({4, 3, 3, 2}, DType::i64), w); },
                      {"conv_fold_centre_tap", "f32"});
}

// What the block's folded backward relies on: for L = sum(G * conv3x3_pad1(x; fold(W, A))), dL/dW is
// the 3x3 weight gradient and dL/dA the 1x1 one (conv2d_backward_weight of each conv), against
// central finite differences of L in double precision of the float forward.
TEST_CASE("conv_fold_centre_tap: finite-difference gradients of a folded convolution") {
  for (int stride : {1, 2}) {
    CAPTURE(stride);
    ops::Conv2dParams p3;
    p3.pad_h = p3.pad_w = 1;
    p3.stride_h = p3.stride_w = stride;
    ops::Conv2dParams p1 = p3;
    p1.kernel_h = p1.kernel_w = 1;
    p1.pad_h = p1.pad_w = 0;
    const Tensor x = test::random_tensor({2, 5, 6, 3}, 10);
    Tensor w = test::random_tensor({4, 3, 3, 3}, 11);
    Tensor a = test::random_tensor({4, 1, 1, 3}, 12);
    const Tensor y0 = ops::conv2d_forward(p3, x, ops::conv_fold_centre_tap(w, a));
    const Tensor g = test::random_tensor(y0.shape(), 13);
    auto loss = [&] {
      const Tensor y = ops::conv2d_forward(p3, x, ops::conv_fold_centre_tap(w, a));
      double s = 0;
      for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * g.f32()[i];
      return s;
    };
    const Tensor dw = ops::conv2d_backward_weight(p3, x, g, w.shape());
    const Tensor da = ops::conv2d_backward_weight(p1, x, g, a.shape());
    auto check = [&](Tensor& t, const Tensor& grad, const char* what) {
      for (int64_t i = 0; i < t.numel(); i += 7) {
        const float keep = t.f32()[i];
        const float h = 1e-2f;
        t.f32()[i] = keep + h;
        const double up = loss();
        t.f32()[i] = keep - h;
        const double down = loss();
        t.f32()[i] = keep;
        const double numeric = (up - down) / (2.0 * h);
        INFO(what << " element " << i);
        CHECK(std::fabs(numeric - grad.f32()[i]) <= 2e-3 * (1.0 + std::fabs(numeric)));
      }
    };
    check(w, dw, "W");
    check(a, da, "A");
  }
}

TEST_CASE("adapter fold in training (CPU): the fused BatchNorm epilogue path gives the layer path's bits") {
  uint64_t seed = 900;
  for (const Case& c : kCases) {
    model::BasicBlock block(c.in, c.out, c.stride, /*adapters=*/true);
    test::randomise(block, seed);
    model::BasicBlock twin = block;
    twin.fuse_training_epilogues = false;  // the same fold, layer by layer
    const Tensor x = test::random_tensor({2, 9, 7, c.in}, seed + 1);
    seed += 10;
    const Tensor y = block.forward(x, /*training=*/true, /*keep=*/true);
    CHECK(bitwise_equal(y, twin.forward(x, true, true)));
    const Tensor dy = test::random_tensor(y.shape(), seed + 2);
    CHECK(bitwise_equal(block.backward(dy, true), twin.backward(dy, true)));
    CHECK(bitwise_equal(block.adapter1.weight.grad, twin.adapter1.weight.grad));
    CHECK(bitwise_equal(block.adapter2.weight.grad, twin.adapter2.weight.grad));
    CHECK(bitwise_equal(block.bn2.weight.grad, twin.bn2.weight.grad));
    CHECK(bitwise_equal(block.bn1.running_mean, twin.bn1.running_mean));
  }
}

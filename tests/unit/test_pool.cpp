// Pooling ops (kernels/pool.cpp, kernels/cpu/pool_cpu.cpp): max pooling and adaptive average
// pooling against naive double-precision loops on awkward NHWC shapes, backward passes against
// the reference scatter and central finite differences, PyTorch's tie and padding rules, and
// argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using ae::test::require_error;

namespace {

std::string describe(const Shape& s, const ops::MaxPool2dParams& p) {
  return "x " + shape_str(s) + " kernel " + std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w) +
         " stride " + std::to_string(p.stride_h) + "x" + std::to_string(p.stride_w) + " pad " +
         std::to_string(p.pad_h) + "x" + std::to_string(p.pad_w);
}

// Max pooling the naive way: padding is -inf, the first strict maximum in row-major window
// order wins. Returns the outputs and the winners' flat h*W+w indices.
struct MaxPoolReference {
  std::vector<double> y;
  std::vector<int64_t> argmax;
};
MaxPoolReference maxpool_reference(const ops::MaxPool2dParams& p, const Tensor& x) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = p.out_h(h), ow = p.out_w(w);
  const std::vector<double> xv = test::to_double(x);
  MaxPoolReference r;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        for (int64_t k = 0; k < c; ++k) {
          double best = -std::numeric_limits<double>::infinity();
          int64_t at = -1;
          for (int64_t di = 0; di < p.kernel_h; ++di)
            for (int64_t dj = 0; dj < p.kernel_w; ++dj) {
              const int64_t yy = i * p.stride_h - p.pad_h + di, xx = j * p.stride_w - p.pad_w + dj;
              if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
              const double v = xv[static_cast<std::size_t>(((b * h + yy) * w + xx) * c + k)];
              if (at < 0 || v > best) {
                best = v;
                at = yy * w + xx;
              }
            }
          r.y.push_back(best);
          r.argmax.push_back(at);
        }
  return r;
}

// dx of max pooling: each dy element goes to its window's winner, accumulating.
std::vector<double> maxpool_backward_reference(const Shape& x_shape, const Tensor& dy,
                                               const std::vector<int64_t>& argmax) {
  const int64_t n = x_shape[0], h = x_shape[1], w = x_shape[2], c = x_shape[3];
  const int64_t per_image = dy.numel() / std::max<int64_t>(n, 1);
  const std::vector<double> g = test::to_double(dy);
  std::vector<double> dx(static_cast<std::size_t>(shape_numel(x_shape)), 0.0);
  for (std::size_t e = 0; e < g.size(); ++e) {
    const int64_t b = static_cast<int64_t>(e) / per_image, k = static_cast<int64_t>(e) % c;
    dx[static_cast<std::size_t>((b * h * w + argmax[e]) * c + k)] += g[e];
  }
  return dx;
}

// A tensor holding a random permutation of evenly spaced distinct values in [-1, 1): no ties,
// and every gap is 2/numel, so a perturbation below half of that cannot change a winner.
Tensor distinct_values(const Shape& shape, uint32_t seed) {
  Tensor t = Tensor::empty(shape);
  std::vector<int64_t> order(static_cast<std::size_t>(t.numel()));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  float* p = t.f32();
  for (std::size_t i = 0; i < order.size(); ++i)
    p[i] = -1.0f + 2.0f * static_cast<float>(order[i]) / static_cast<float>(order.size());
  return t;
}

std::vector<int64_t> to_i64(const Tensor& t) {
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

const std::vector<Shape> kShapes{{1, 7, 5, 3}, {2, 13, 17, 5}, {1, 1, 1, 1}, {2, 7, 5, 64}, {1, 5, 7, 1}, {2, 4, 4, 3}};

// {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w}
const std::vector<ops::MaxPool2dParams> kMaxPools{
    {3, 3, 2, 2, 1, 1},  // ResNet's stem
    {2, 2, 2, 2, 0, 0}, {1, 1, 1, 1, 0, 0}, {3, 3, 1, 1, 1, 1}, {3, 2, 1, 2, 1, 1},
    {5, 5, 3, 3, 2, 2}, {7, 7, 1, 1, 3, 3}, {2, 3, 1, 2, 1, 0}};

bool fits(const ops::MaxPool2dParams& p, const Shape& s) {
  return s[1] + 2 * p.pad_h >= p.kernel_h && s[2] + 2 * p.pad_w >= p.kernel_w;
}

}  // namespace

TEST_CASE("maxpool2d forward: a hand-worked 4x4 with ResNet's 3x3/2/1") {
  std::vector<float> v(16);
  std::iota(v.begin(), v.end(), 0.0f);
  Tensor x = Tensor::from_vector({1, 4, 4, 1}, v);
  ops::MaxPoolOut out = ops::maxpool2d_forward({}, x);
  CHECK(out.y.shape() == Shape{1, 2, 2, 1});
  AE_REQUIRE_OK(test::compare(out.y, std::vector<double>{5, 7, 13, 15}, {0, 0, 0}, "y"));
  CHECK(to_i64(out.argmax) == std::vector<int64_t>{5, 7, 13, 15});
}

TEST_CASE("maxpool2d forward matches the naive loop on awkward shapes") {
  int checked = 0;
  for (const Shape& s : kShapes)
    for (const ops::MaxPool2dParams& p : kMaxPools) {
      if (!fits(p, s)) continue;
      // Random values quantised to a few levels, so ties happen and the tie rule is exercised.
      Tensor x = test::random_tensor(s, 11 + static_cast<uint64_t>(checked));
      for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = std::round(x.f32()[i] * 4.0f);
      const MaxPoolReference ref = maxpool_reference(p, x);
      ops::MaxPoolOut out = ops::maxpool2d_forward(p, x);
      INFO(describe(s, p));
      CHECK(out.y.shape() == Shape{s[0], p.out_h(s[1]), p.out_w(s[2]), s[3]});
      CHECK(out.argmax.dtype() == DType::i64);
      AE_REQUIRE_OK(test::compare(out.y, ref.y, {0, 0, 0}, "maxpool y " + describe(s, p)));
      CHECK(to_i64(out.argmax) == ref.argmax);
      ops::MaxPool2dParams y_only = p;  // inference: the same y, no argmax
      y_only.with_argmax = false;
      const ops::MaxPoolOut lean = ops::maxpool2d_forward(y_only, x);
      CHECK_FALSE(lean.argmax.defined());
      CHECK(test::bitwise_equal(lean.y, out.y));
      ++checked;
    }
  CHECK(checked >= 40);
}

TEST_CASE("maxpool2d ties go to the first maximum in row-major window order") {
  SUBCASE("a constant image") {
    Tensor x = Tensor::full({1, 5, 5, 2}, 1.5f);
    ops::MaxPoolOut out = ops::maxpool2d_forward({}, x);  // 3x3/2/1 -> 3x3
    // Window (i,j) starts at row max(2i-1,0), column max(2j-1,0).
    const std::vector<int64_t> first{0, 0, 1, 1, 3, 3, 5, 5, 6, 6, 8, 8, 15, 15, 16, 16, 18, 18};
    CHECK(to_i64(out.argmax) == first);
  }
  SUBCASE("two equal maxima in one window") {
    // 1x3 image, one 1x3 window: the maxima at w=0 and w=2 tie; w=0 comes first.
    Tensor x = Tensor::from_vector({1, 1, 3, 1}, {2.0f, 1.0f, 2.0f});
    ops::MaxPoolOut out = ops::maxpool2d_forward({1, 3, 1, 1, 0, 0}, x);
    CHECK(to_i64(out.argmax) == std::vector<int64_t>{0});
  }
}

TEST_CASE("maxpool2d padding acts as -inf and NaN propagates") {
  // All inputs negative: a zero-padded pool would output 0 at the border.
  Tensor x = Tensor::full({1, 3, 3, 1}, -5.0f);
  x.f32()[4] = -7.0f;
  ops::MaxPoolOut out = ops::maxpool2d_forward({3, 3, 1, 1, 1, 1}, x);
  for (float v : out.y.to_vector()) CHECK(v == -5.0f);
  // A window of -inf only still reports a position inside the image (PyTorch's choice).
  Tensor inf = Tensor::full({1, 2, 2, 1}, -std::numeric_limits<float>::infinity());
  ops::MaxPoolOut inf_out = ops::maxpool2d_forward({2, 2, 1, 1, 1, 1}, inf);
  for (int64_t a : to_i64(inf_out.argmax)) CHECK((a >= 0 && a < 4));
  Tensor nan = Tensor::from_vector({1, 1, 3, 1}, {1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f});
  ops::MaxPoolOut nan_out = ops::maxpool2d_forward({1, 3, 1, 1, 0, 0}, nan);
  CHECK(std::isnan(nan_out.y.to_vector()[0]));
  CHECK(to_i64(nan_out.argmax)[0] == 1);  // PyTorch 1.13 reports the NaN's position too
}

TEST_CASE("with pad <= kernel/2 no max-pool window lies entirely in padding") {
  // Exhaustive over small sizes: every output's winner is a real pixel inside its window.
  int checked = 0;
  for (int k = 1; k <= 7; ++k)
    for (int stride = 1; stride <= 4; ++stride)
      for (int pad = 0; pad <= k / 2; ++pad)
        for (int64_t h = 1; h <= 10; ++h) {
          if (h + 2 * pad < k) continue;
          const ops::MaxPool2dParams p{k, 1, stride, 1, pad, 0};
          Tensor x = distinct_values({1, h, 1, 1}, static_cast<uint32_t>(checked));
          const std::vector<int64_t> argmax = to_i64(ops::maxpool2d_forward(p, x).argmax);
          for (std::size_t i = 0; i < argmax.size(); ++i) {
            const int64_t start = static_cast<int64_t>(i) * stride - pad;
            INFO("kernel " << k << " stride " << stride << " pad " << pad << " H " << h << " output " << i);
            CHECK((argmax[i] >= std::max<int64_t>(start, 0) && argmax[i] < std::min<int64_t>(start + k, h)));
          }
          ++checked;
        }
  CHECK(checked > 500);
}

TEST_CASE("maxpool2d backward matches the reference scatter (overlapping windows accumulate)") {
  uint64_t seed = 0;
  for (const Shape& s : kShapes)
    for (const ops::MaxPool2dParams& p : kMaxPools) {
      if (!fits(p, s)) continue;
      Tensor x = test::random_tensor(s, 300 + seed);
      Tensor dy = test::random_tensor({s[0], p.out_h(s[1]), p.out_w(s[2]), s[3]}, 400 + seed++);
      ops::MaxPoolOut out = ops::maxpool2d_forward(p, x);
      const std::vector<double> ref = maxpool_backward_reference(s, dy, maxpool_reference(p, x).argmax);
      Tensor dx = ops::maxpool2d_backward(p, dy, out.argmax, s);
      CHECK(dx.shape() == s);
      AE_REQUIRE_OK(test::compare(dx, ref, {1e-6, 1e-6, 1e-12}, "maxpool dx " + describe(s, p)));
    }
}

TEST_CASE("maxpool2d backward matches central finite differences") {
  const std::vector<std::pair<Shape, ops::MaxPool2dParams>> cases{
      {{1, 7, 5, 3}, {3, 3, 2, 2, 1, 1}},
      {{2, 5, 7, 1}, {3, 3, 1, 1, 1, 1}},
      {{1, 6, 5, 5}, {3, 2, 1, 2, 1, 1}},
      {{2, 1, 1, 3}, {1, 1, 1, 1, 0, 0}}};
  uint32_t seed = 1;
  for (const auto& [s, p] : cases) {
    Tensor x = distinct_values(s, seed++);
    const Shape y_shape{s[0], p.out_h(s[1]), p.out_w(s[2]), s[3]};
    Tensor weights = test::random_tensor(y_shape, 500 + seed);
    auto loss = [&] { return test::weighted_sum(ops::maxpool2d_forward(p, x).y, weights); };
    // Gaps between values are 2/numel; eps stays below half of that so winners never change.
    const double eps = 0.4 / static_cast<double>(x.numel());
    const std::vector<double> numeric = test::numeric_gradient(x, loss, eps);
    ops::MaxPoolOut out = ops::maxpool2d_forward(p, x);
    Tensor dx = ops::maxpool2d_backward(p, weights, out.argmax, s);
    AE_REQUIRE_OK(test::compare(dx, numeric, {2e-3, 2e-3, 1e-5}, "maxpool finite differences " + describe(s, p)));
  }
}

namespace {

int64_t bin_start(int64_t i, int64_t in, int64_t out) {
  return static_cast<int64_t>(std::floor(static_cast<double>(i * in) / static_cast<double>(out)));
}
int64_t bin_end(int64_t i, int64_t in, int64_t out) {
  return static_cast<int64_t>(std::ceil(static_cast<double>((i + 1) * in) / static_cast<double>(out)));
}

std::vector<double> adaptive_reference(const ops::AdaptiveAvgPool2dParams& p, const Tensor& x) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const std::vector<double> xv = test::to_double(x);
  std::vector<double> y;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < p.out_h; ++i)
      for (int64_t j = 0; j < p.out_w; ++j)
        for (int64_t k = 0; k < c; ++k) {
          double sum = 0;
          int64_t count = 0;
          for (int64_t yy = bin_start(i, h, p.out_h); yy < bin_end(i, h, p.out_h); ++yy)
            for (int64_t xx = bin_start(j, w, p.out_w); xx < bin_end(j, w, p.out_w); ++xx) {
              sum += xv[static_cast<std::size_t>(((b * h + yy) * w + xx) * c + k)];
              ++count;
            }
          y.push_back(sum / static_cast<double>(count));
        }
  return y;
}

std::vector<double> adaptive_backward_reference(const ops::AdaptiveAvgPool2dParams& p, const Tensor& dy,
                                                const Shape& s) {
  const int64_t h = s[1], w = s[2], c = s[3];
  const std::vector<double> g = test::to_double(dy);
  std::vector<double> dx(static_cast<std::size_t>(shape_numel(s)), 0.0);
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t i = 0; i < p.out_h; ++i)
      for (int64_t j = 0; j < p.out_w; ++j) {
        const int64_t h0 = bin_start(i, h, p.out_h), h1 = bin_end(i, h, p.out_h);
        const int64_t w0 = bin_start(j, w, p.out_w), w1 = bin_end(j, w, p.out_w);
        const double count = static_cast<double>((h1 - h0) * (w1 - w0));
        for (int64_t k = 0; k < c; ++k)
          for (int64_t yy = h0; yy < h1; ++yy)
            for (int64_t xx = w0; xx < w1; ++xx)
              dx[static_cast<std::size_t>(((b * h + yy) * w + xx) * c + k)] +=
                  g[static_cast<std::size_t>(((b * p.out_h + i) * p.out_w + j) * c + k)] / count;
      }
  return dx;
}

struct AdaptiveCase {
  Shape x;
  ops::AdaptiveAvgPool2dParams p;
};
// 7->3, 5->2, 13->4, 1->1, 3->5 (more outputs than inputs: bins overlap), global 7x7->1x1.
const std::vector<AdaptiveCase> kAdaptive{
    {{1, 7, 7, 3}, {3, 3}},   {{2, 5, 5, 5}, {2, 2}},   {{1, 13, 13, 1}, {4, 4}},  {{2, 1, 1, 64}, {1, 1}},
    {{1, 3, 3, 3}, {5, 5}},   {{2, 7, 7, 64}, {1, 1}},  {{1, 7, 5, 5}, {3, 2}},    {{2, 13, 17, 3}, {4, 5}},
    {{1, 3, 7, 1}, {5, 3}},   {{2, 7, 7, 512}, {1, 1}}, {{1, 5, 13, 3}, {5, 13}}};

std::string describe(const AdaptiveCase& a) {
  return "x " + shape_str(a.x) + " -> " + std::to_string(a.p.out_h) + "x" + std::to_string(a.p.out_w);
}

}  // namespace

TEST_CASE("adaptive bins follow PyTorch: 7 -> 3 covers [0,3) [2,5) [4,7)") {
  std::vector<float> v(7);
  std::iota(v.begin(), v.end(), 0.0f);
  Tensor x = Tensor::from_vector({1, 1, 7, 1}, v);
  Tensor y = ops::adaptive_avgpool2d_forward({1, 3}, x);
  AE_REQUIRE_OK(test::compare(y, std::vector<double>{1, 3, 5}, {1e-6, 1e-6, 1e-12}, "7 -> 3"));
}

TEST_CASE("adaptive_avgpool2d forward and backward match the naive loops") {
  uint64_t seed = 0;
  for (const AdaptiveCase& a : kAdaptive) {
    INFO(describe(a));
    Tensor x = test::random_tensor(a.x, 600 + seed);
    Tensor y = ops::adaptive_avgpool2d_forward(a.p, x);
    CHECK(y.shape() == Shape{a.x[0], a.p.out_h, a.p.out_w, a.x[3]});
    AE_REQUIRE_OK(test::compare(y, adaptive_reference(a.p, x), {1e-6, 1e-5, 1e-11}, "adaptive y " + describe(a)));
    Tensor dy = test::random_tensor(y.shape(), 700 + seed++);
    Tensor dx = ops::adaptive_avgpool2d_backward(a.p, dy, a.x);
    CHECK(dx.shape() == a.x);
    AE_REQUIRE_OK(test::compare(dx, adaptive_backward_reference(a.p, dy, a.x), {1e-6, 1e-5, 1e-11},
                                "adaptive dx " + describe(a)));
  }
}

TEST_CASE("adaptive_avgpool2d backward matches central finite differences") {
  const std::vector<AdaptiveCase> cases{
      {{1, 7, 7, 3}, {3, 3}}, {{2, 5, 5, 1}, {2, 2}}, {{1, 3, 3, 2}, {5, 5}}, {{1, 7, 5, 5}, {1, 1}}};
  uint64_t seed = 0;
  for (const AdaptiveCase& a : cases) {
    Tensor x = test::random_tensor(a.x, 800 + seed);
    Tensor weights = test::random_tensor({a.x[0], a.p.out_h, a.p.out_w, a.x[3]}, 900 + seed++);
    auto loss = [&] { return test::weighted_sum(ops::adaptive_avgpool2d_forward(a.p, x), weights); };
    const std::vector<double> numeric = test::numeric_gradient(x, loss, 1e-2);
    Tensor dx = ops::adaptive_avgpool2d_backward(a.p, weights, a.x);
    AE_REQUIRE_OK(test::compare(dx, numeric, {1e-3, 1e-3, 1e-6}, "adaptive finite differences " + describe(a)));
  }
}

TEST_CASE("pool argument errors name the op, the argument and the shapes") {
  Tensor x = Tensor::zeros({2, 7, 5, 3});
  SUBCASE("maxpool padding over half the kernel") {
    require_error([&] { ops::maxpool2d_forward({3, 3, 2, 2, 2, 1}, x); },
                  {"maxpool2d_forward", "padding 2x1", "half the kernel 3x3"});
    require_error([&] { ops::maxpool2d_forward({2, 2, 1, 1, 0, 2}, x); }, {"maxpool2d_forward", "padding 0x2"});
  }
  SUBCASE("maxpool bad kernel, stride, rank and size") {
    require_error([&] { ops::maxpool2d_forward({0, 3, 1, 1, 0, 0}, x); }, {"maxpool2d_forward", "kernel 0x3"});
    require_error([&] { ops::maxpool2d_forward({3, 3, 0, 1, 1, 1}, x); }, {"maxpool2d_forward", "stride 0x1"});
    require_error([&] { ops::maxpool2d_forward({}, Tensor::zeros({7, 5, 3})); },
                  {"maxpool2d_forward", "x", "[7,5,3]", "4 dimensions"});
    require_error([&] { ops::maxpool2d_forward({7, 7, 1, 1, 0, 0}, x); },
                  {"maxpool2d_forward", "[2,7,5,3]", "smaller than the kernel 7x7"});
  }
  SUBCASE("maxpool backward shapes and dtypes") {
    ops::MaxPoolOut out = ops::maxpool2d_forward({}, x);  // y [2,4,3,3]
    Tensor wrong = Tensor::zeros({2, 4, 4, 3});
    require_error([&] { ops::maxpool2d_backward({}, wrong, out.argmax, x.shape()); },
                  {"maxpool2d_backward", "dy", "[2,4,4,3]", "expected [2,4,3,3]"});
    require_error([&] { ops::maxpool2d_backward({}, out.y, Tensor::zeros({2, 4, 3, 3}), x.shape()); },
                  {"maxpool2d_backward", "argmax", "i64"});
    require_error([&] { ops::maxpool2d_backward({}, out.y, out.argmax, {2, 7, 5}); },
                  {"maxpool2d_backward", "x_shape", "[2,7,5]"});
    Tensor corrupt = out.argmax.clone();
    corrupt.data<int64_t>()[5] = 35;  // the plane is 7x5 = 35 positions: 0..34
    require_error([&] { ops::maxpool2d_backward({}, out.y, corrupt, x.shape()); },
                  {"maxpool2d_backward", "argmax element 5", "35", "7x5"});
  }
  SUBCASE("adaptive pool") {
    require_error([&] { ops::adaptive_avgpool2d_forward({0, 1}, x); }, {"adaptive_avgpool2d_forward", "0x1"});
    require_error([&] { ops::adaptive_avgpool2d_forward({1, 1}, Tensor::zeros({2, 0, 5, 3})); },
                  {"adaptive_avgpool2d_forward", "[2,0,5,3]", "empty"});
    require_error([&] { ops::adaptive_avgpool2d_backward({3, 2}, Tensor::zeros({2, 2, 3, 3}), x.shape()); },
                  {"adaptive_avgpool2d_backward", "dy", "[2,2,3,3]", "expected [2,3,2,3]"});
    require_error([&] { ops::adaptive_avgpool2d_forward({1, 1}, Tensor::zeros({2, 7, 5, 3}, DType::u8)); },
                  {"adaptive_avgpool2d_forward", "x", "f32"});
  }
}

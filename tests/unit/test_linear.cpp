// Fully connected layer (kernels/linear.cpp, kernels/cpu/linear_cpu.cpp): forward and backward
// against naive double-precision loops on awkward sizes, backward against central finite
// differences, optional bias and input gradient, and argument errors.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using ae::test::require_error;

namespace {

struct Dims {
  int64_t n, in, out;
};
std::string describe(const Dims& d) {
  return "N " + std::to_string(d.n) + " in " + std::to_string(d.in) + " out " + std::to_string(d.out);
}

// y = x W^T + b in double.
std::vector<double> forward_reference(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t n = x.dim(0), in = w.dim(1), out = w.dim(0);
  const std::vector<double> xv = test::to_double(x), wv = test::to_double(w);
  const std::vector<double> bv = bias.defined() ? test::to_double(bias) : std::vector<double>(out, 0.0);
  std::vector<double> y(static_cast<std::size_t>(n * out));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = bv[o];
      for (int64_t i = 0; i < in; ++i) s += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

struct GradsReference {
  std::vector<double> dx, dw, db;
};
// dx = dy W, dW = dy^T x, db = column sums of dy, in double.
GradsReference backward_reference(const Tensor& x, const Tensor& w, const Tensor& dy) {
  const int64_t n = x.dim(0), in = w.dim(1), out = w.dim(0);
  const std::vector<double> xv = test::to_double(x), wv = test::to_double(w), g = test::to_double(dy);
  GradsReference r{std::vector<double>(n * in, 0.0), std::vector<double>(out * in, 0.0),
                   std::vector<double>(out, 0.0)};
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < out; ++o) {
      const double go = g[b * out + o];
      r.db[o] += go;
      for (int64_t i = 0; i < in; ++i) {
        r.dx[b * in + i] += go * wv[o * in + i];
        r.dw[o * in + i] += go * xv[b * in + i];
      }
    }
  return r;
}

const std::vector<Dims> kDims{{1, 1, 1}, {2, 7, 5}, {1, 13, 17}, {2, 64, 3}, {5, 3, 64}, {2, 512, 1}, {32, 1000, 256}, {3, 5, 7}};
// Float sums of up to 1000 products of values in [-1, 1).
const test::Tolerance kTol{1e-5, 1e-4, 1e-10};

}  // namespace

TEST_CASE("linear forward: a hand-worked 1x2 -> 3") {
  Tensor x = Tensor::from_vector({1, 2}, {1.0f, 2.0f});
  Tensor w = Tensor::from_vector({3, 2}, {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, -1.0f});
  Tensor b = Tensor::from_vector({3}, {0.5f, 0.0f, -0.5f});
  AE_REQUIRE_OK(test::compare(ops::linear_forward(x, w, b), std::vector<double>{1.5, 2.0, -1.5}, {0, 0, 0}, "y"));
}

TEST_CASE("linear forward and backward match the naive loops, with and without bias") {
  uint64_t seed = 0;
  for (const Dims& d : kDims) {
    INFO(describe(d));
    Tensor x = test::random_tensor({d.n, d.in}, 10 + seed);
    Tensor w = test::random_tensor({d.out, d.in}, 20 + seed);
    Tensor b = test::random_tensor({d.out}, 30 + seed);
    Tensor dy = test::random_tensor({d.n, d.out}, 40 + seed++);

    Tensor y = ops::linear_forward(x, w, b);
    CHECK(y.shape() == Shape{d.n, d.out});
    AE_REQUIRE_OK(test::compare(y, forward_reference(x, w, b), kTol, "y with bias " + describe(d)));
    AE_REQUIRE_OK(test::compare(ops::linear_forward(x, w, Tensor()), forward_reference(x, w, Tensor()), kTol,
                                "y without bias " + describe(d)));

    const GradsReference ref = backward_reference(x, w, dy);
    ops::LinearGrads g = ops::linear_backward(x, w, dy, true, true);
    AE_REQUIRE_OK(test::compare(g.dx, ref.dx, kTol, "dx " + describe(d)));
    AE_REQUIRE_OK(test::compare(g.dw, ref.dw, kTol, "dw " + describe(d)));
    AE_REQUIRE_OK(test::compare(g.dbias, ref.db, kTol, "dbias " + describe(d)));
    CHECK(g.dw.shape() == w.shape());

    ops::LinearGrads frozen = ops::linear_backward(x, w, dy, false, false);
    CHECK_FALSE(frozen.dx.defined());
    CHECK_FALSE(frozen.dbias.defined());
    AE_REQUIRE_OK(test::compare(frozen.dw, ref.dw, kTol, "dw without dx " + describe(d)));
  }
}

TEST_CASE("linear backward matches central finite differences") {
  const std::vector<Dims> dims{{2, 7, 5}, {1, 1, 1}, {3, 5, 13}};
  uint64_t seed = 0;
  for (const Dims& d : dims) {
    Tensor x = test::random_tensor({d.n, d.in}, 50 + seed);
    Tensor w = test::random_tensor({d.out, d.in}, 60 + seed);
    Tensor b = test::random_tensor({d.out}, 70 + seed);
    Tensor weights = test::random_tensor({d.n, d.out}, 80 + seed++);
    auto loss = [&] { return test::weighted_sum(ops::linear_forward(x, w, b), weights); };
    ops::LinearGrads g = ops::linear_backward(x, w, weights, true, true);
    const test::Tolerance tol{1e-3, 1e-3, 1e-6};
    AE_REQUIRE_OK(test::compare(g.dx, test::numeric_gradient(x, loss), tol, "dx finite differences " + describe(d)));
    AE_REQUIRE_OK(test::compare(g.dw, test::numeric_gradient(w, loss), tol, "dw finite differences " + describe(d)));
    AE_REQUIRE_OK(test::compare(g.dbias, test::numeric_gradient(b, loss), tol, "db finite differences " + describe(d)));
  }
}

TEST_CASE("linear on an empty batch gives empty outputs and zero weight gradients") {
  Tensor x = Tensor::zeros({0, 4});
  Tensor w = test::random_tensor({3, 4}, 1);
  Tensor b = test::random_tensor({3}, 2);
  CHECK(ops::linear_forward(x, w, b).shape() == Shape{0, 3});
  ops::LinearGrads g = ops::linear_backward(x, w, Tensor::zeros({0, 3}), true, true);
  CHECK(g.dx.shape() == Shape{0, 4});
  AE_REQUIRE_OK(test::compare(g.dw, std::vector<double>(12, 0.0), {0, 0, 0}, "dw"));
  AE_REQUIRE_OK(test::compare(g.dbias, std::vector<double>(3, 0.0), {0, 0, 0}, "dbias"));
}

TEST_CASE("linear argument errors name the op, the argument and the shapes") {
  Tensor x = Tensor::zeros({2, 7});
  Tensor w = Tensor::zeros({5, 7});
  require_error([&] { ops::linear_forward(x, Tensor::zeros({5, 6}), Tensor()); },
                {"linear_forward", "x [2,7]", "w [5,6]", "7 features"});
  require_error([&] { ops::linear_forward(x, w, Tensor::zeros({7})); }, {"linear_forward", "bias", "[7]", "expected [5]"});
  require_error([&] { ops::linear_forward(Tensor::zeros({2, 7, 1}), w, Tensor()); },
                {"linear_forward", "x", "[2,7,1]", "2 dimensions"});
  require_error([&] { ops::linear_forward(x, Tensor::zeros({0, 7}), Tensor()); }, {"linear_forward", "w", "[0,7]"});
  require_error([&] { ops::linear_backward(x, w, Tensor::zeros({2, 4}), true); },
                {"linear_backward", "dy", "[2,4]", "expected [2,5]"});
  require_error([&] { ops::linear_backward(x, Tensor::zeros({5, 3}), Tensor::zeros({2, 5}), true); },
                {"linear_backward", "w [5,3]"});
  require_error([&] { ops::linear_forward(Tensor::zeros({2, 7}, DType::i64), w, Tensor()); },
                {"linear_forward", "x", "f32"});
}

// BatchNorm (channels last) on the CPU backend: forward (train and eval) against a naive
// double-precision loop, PyTorch's running-stat update against hand-computed values, both
// backward passes against the double reference and against central finite differences,
// argument errors, and bitwise determinism across runs and thread counts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/channel_reduce.h"
#include "kernels/ops.h"
#include "runtime/philox.h"
#include "runtime/thread_pool.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

namespace {

using ae::Shape;
using ae::Tensor;
using ae::test::bitwise_equal;
using ae::test::compare;
using ae::test::error_of;
using ae::test::require_error;
using ae::test::Tolerance;

// ---------------------------------------------------------------- double reference

struct Matrix {
  int64_t rows, channels;
};
Matrix as_matrix(const Shape& s) {
  const int64_t c = s.back();
  return {ae::shape_numel(s) / c, c};
}

struct RefStats {
  std::vector<double> mean, var;  // var is biased
};
RefStats ref_stats(const Tensor& x) {
  const auto [m, c] = as_matrix(x.shape());
  const std::vector<double> v = ae::test::to_double(x);
  RefStats s{std::vector<double>(c, 0.0), std::vector<double>(c, 0.0)};
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < c; ++j) s.mean[j] += v[r * c + j];
  for (auto& e : s.mean) e /= static_cast<double>(m);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < c; ++j) s.var[j] += (v[r * c + j] - s.mean[j]) * (v[r * c + j] - s.mean[j]);
  for (auto& e : s.var) e /= static_cast<double>(m);
  return s;
}

std::vector<double> ref_invstd(const std::vector<double>& var, double eps) {
  std::vector<double> out;
  for (double v : var) out.push_back(1.0 / std::sqrt(v + eps));
  return out;
}

std::vector<double> ref_normalise(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& invstd,
                                  const Tensor& gamma, const Tensor& beta) {
  const auto [m, c] = as_matrix(x.shape());
  const std::vector<double> v = ae::test::to_double(x), g = ae::test::to_double(gamma), b = ae::test::to_double(beta);
  std::vector<double> y(v.size());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < c; ++j) y[r * c + j] = (v[r * c + j] - mean[j]) * invstd[j] * g[j] + b[j];
  return y;
}

struct RefGrads {
  std::vector<double> dx, dgamma, dbeta;
};
// train = true: gradients through the batch statistics; false: statistics are constants.
RefGrads ref_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const std::vector<double>& mean,
                      const std::vector<double>& invstd, bool train) {
  const auto [m, c] = as_matrix(x.shape());
  const std::vector<double> v = ae::test::to_double(x), d = ae::test::to_double(dy), g = ae::test::to_double(gamma);
  RefGrads out{std::vector<double>(v.size()), std::vector<double>(c, 0.0), std::vector<double>(c, 0.0)};
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < c; ++j) {
      const double xhat = (v[r * c + j] - mean[j]) * invstd[j];
      out.dgamma[j] += d[r * c + j] * xhat;
      out.dbeta[j] += d[r * c + j];
    }
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < c; ++j) {
      const int64_t i = r * c + j;
      const double xhat = (v[i] - mean[j]) * invstd[j];
      out.dx[i] = train ? g[j] * invstd[j] / m * (m * d[i] - out.dbeta[j] - xhat * out.dgamma[j])
                        : d[i] * g[j] * invstd[j];
    }
  return out;
}

// ---------------------------------------------------------------- helpers

struct BnInputs {
  Tensor x, gamma, beta, running_mean, running_var;
};
BnInputs make_inputs(const Shape& shape, uint64_t seed) {
  const int64_t c = shape.back();
  return {ae::test::random_tensor(shape, seed, -2.0f, 3.0f), ae::test::random_tensor({c}, seed + 1, 0.5f, 1.5f),
          ae::test::random_tensor({c}, seed + 2, -0.5f, 0.5f), ae::test::random_tensor({c}, seed + 3, -0.3f, 0.3f),
          ae::test::random_tensor({c}, seed + 4, 0.5f, 2.0f)};
}

const Tolerance kForwardTol{2e-5, 1e-4, 1e-10};
const Tolerance kBackwardTol{2e-5, 2e-4, 1e-10};
// Finite differences in float: loose per element, still far tighter than any formula error.
const Tolerance kNumericTol{3e-3, 3e-2, 1e-4};

const std::vector<Shape> kAwkwardShapes = {{2, 7, 5, 3}, {1, 13, 17, 5}, {3, 1, 1, 64}, {4, 5}, {2, 9, 11, 7}};

}  // namespace

TEST_CASE("batchnorm train forward matches a double reference on awkward shapes") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 11);
    const std::vector<double> rm0 = ae::test::to_double(in.running_mean), rv0 = ae::test::to_double(in.running_var);
    ae::ops::BatchNormParams p;
    p.momentum = 0.25f;
    const auto out = ae::ops::batchnorm_forward_train(p, in.x, in.gamma, in.beta, in.running_mean, in.running_var);

    const RefStats s = ref_stats(in.x);
    const std::vector<double> invstd = ref_invstd(s.var, p.eps);
    AE_REQUIRE_OK(compare(out.y, ref_normalise(in.x, s.mean, invstd, in.gamma, in.beta), kForwardTol, "y"));
    AE_REQUIRE_OK(compare(out.save_mean, s.mean, kForwardTol, "save_mean"));
    AE_REQUIRE_OK(compare(out.save_invstd, invstd, kForwardTol, "save_invstd"));

    const double m = static_cast<double>(as_matrix(shape).rows);
    std::vector<double> rm, rv;
    for (std::size_t j = 0; j < s.mean.size(); ++j) {
      rm.push_back(0.75 * rm0[j] + 0.25 * s.mean[j]);
      rv.push_back(0.75 * rv0[j] + 0.25 * s.var[j] * m / (m - 1));
    }
    AE_REQUIRE_OK(compare(in.running_mean, rm, kForwardTol, "running_mean"));
    AE_REQUIRE_OK(compare(in.running_var, rv, kForwardTol, "running_var"));
  }
}

TEST_CASE("batchnorm train forward keeps its accuracy when the mean is far from zero") {
  BnInputs in = make_inputs({4, 6, 5, 3}, 5);
  float* xp = in.x.f32();
  for (int64_t i = 0; i < in.x.numel(); ++i) xp[i] += 100.0f;  // E[x^2]-E[x]^2 would lose ~4 digits here
  const auto out = ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, in.running_mean, in.running_var);
  const RefStats s = ref_stats(in.x);
  // Normalising uses the float save_mean (as PyTorch does); its rounding (~4e-6 at 100) sets the tolerance.
  AE_REQUIRE_OK(compare(out.y, ref_normalise(in.x, s.mean, ref_invstd(s.var, 1e-5), in.gamma, in.beta),
                        Tolerance{3e-5, 1e-4, 1e-9}, "y"));
  AE_REQUIRE_OK(compare(out.save_invstd, ref_invstd(s.var, 1e-5), kForwardTol, "save_invstd"));
}

TEST_CASE("batchnorm running statistics follow PyTorch's update with the unbiased variance") {
  // Channel 0: 1,2,3,4 -> mean 2.5, biased var 1.25, unbiased 5/3.
  // Channel 1: -1,0,2,7 -> mean 2, biased var 9.5, unbiased 38/3.
  const Tensor x = Tensor::from_vector({4, 2}, {1, -1, 2, 0, 3, 2, 4, 7});
  const Tensor gamma = Tensor::from_vector({2}, {1, 1}), beta = Tensor::from_vector({2}, {0, 0});
  Tensor rm = Tensor::from_vector({2}, {0.5f, 0.5f}), rv = Tensor::from_vector({2}, {2.0f, 2.0f});
  ae::ops::BatchNormParams p;  // momentum 0.1, eps 1e-5
  const auto out = ae::ops::batchnorm_forward_train(p, x, gamma, beta, rm, rv);
  // running_mean = 0.9*0.5 + 0.1*mean; running_var = 0.9*2 + 0.1*unbiased var.
  AE_REQUIRE_OK(compare(rm, std::vector<double>{0.7, 0.65}, kForwardTol, "running_mean after one step"));
  AE_REQUIRE_OK(compare(rv, std::vector<double>{1.8 + 0.1 * 5.0 / 3.0, 1.8 + 0.1 * 38.0 / 3.0}, kForwardTol,
                        "running_var after one step"));
  AE_REQUIRE_OK(compare(out.save_mean, std::vector<double>{2.5, 2.0}, kForwardTol, "save_mean"));
  AE_REQUIRE_OK(compare(out.save_invstd, std::vector<double>{1 / std::sqrt(1.25 + 1e-5), 1 / std::sqrt(9.5 + 1e-5)},
                        kForwardTol, "save_invstd uses the biased variance"));

  // A second step compounds: r = 0.9*r + 0.1*stat again.
  ae::ops::batchnorm_forward_train(p, x, gamma, beta, rm, rv);
  AE_REQUIRE_OK(compare(rm, std::vector<double>{0.9 * 0.7 + 0.25, 0.9 * 0.65 + 0.2}, kForwardTol,
                        "running_mean after two steps"));
  AE_REQUIRE_OK(compare(rv,
                        std::vector<double>{0.9 * (1.8 + 0.1 * 5.0 / 3.0) + 0.1 * 5.0 / 3.0,
                                            0.9 * (1.8 + 0.1 * 38.0 / 3.0) + 0.1 * 38.0 / 3.0},
                        kForwardTol, "running_var after two steps"));

  // momentum 1 replaces the running statistics by the batch's.
  p.momentum = 1.0f;
  ae::ops::batchnorm_forward_train(p, x, gamma, beta, rm, rv);
  AE_REQUIRE_OK(compare(rm, std::vector<double>{2.5, 2.0}, kForwardTol, "running_mean, momentum 1"));
  AE_REQUIRE_OK(compare(rv, std::vector<double>{5.0 / 3.0, 38.0 / 3.0}, kForwardTol, "running_var, momentum 1"));
}

TEST_CASE("batchnorm eval forward uses the running statistics and leaves them alone") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 23);
    const Tensor rm_before = in.running_mean.clone(), rv_before = in.running_var.clone();
    ae::ops::BatchNormParams p;
    p.eps = 1e-3f;
    const Tensor y = ae::ops::batchnorm_forward_eval(p, in.x, in.gamma, in.beta, in.running_mean, in.running_var);
    const std::vector<double> invstd = ref_invstd(ae::test::to_double(in.running_var), 1e-3);
    AE_REQUIRE_OK(compare(y, ref_normalise(in.x, ae::test::to_double(in.running_mean), invstd, in.gamma, in.beta),
                          kForwardTol, "y"));
    CHECK(bitwise_equal(in.running_mean, rm_before));
    CHECK(bitwise_equal(in.running_var, rv_before));
  }
  // One row is fine in eval mode (no batch statistics involved).
  BnInputs one = make_inputs({1, 1, 1, 4}, 3);
  const Tensor y = ae::ops::batchnorm_forward_eval({}, one.x, one.gamma, one.beta, one.running_mean, one.running_var);
  CHECK(y.shape() == Shape{1, 1, 1, 4});
}

TEST_CASE("batchnorm train backward matches the double reference formula") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 31);
    const auto out = ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, in.running_mean, in.running_var);
    const Tensor dy = ae::test::random_tensor(shape, 32);
    const auto g = ae::ops::batchnorm_backward_train(in.x, dy, in.gamma, out.save_mean, out.save_invstd);
    const RefStats s = ref_stats(in.x);
    const RefGrads r = ref_backward(in.x, dy, in.gamma, s.mean, ref_invstd(s.var, 1e-5), true);
    AE_REQUIRE_OK(compare(g.dx, r.dx, kBackwardTol, "dx"));
    AE_REQUIRE_OK(compare(g.dgamma, r.dgamma, kBackwardTol, "dgamma"));
    AE_REQUIRE_OK(compare(g.dbeta, r.dbeta, kBackwardTol, "dbeta"));
  }
}

TEST_CASE("batchnorm eval backward matches the double reference formula") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 41);
    const Tensor dy = ae::test::random_tensor(shape, 42);
    const auto g = ae::ops::batchnorm_backward_eval({}, in.x, dy, in.gamma, in.running_mean, in.running_var);
    const RefGrads r = ref_backward(in.x, dy, in.gamma, ae::test::to_double(in.running_mean),
                                    ref_invstd(ae::test::to_double(in.running_var), 1e-5), false);
    AE_REQUIRE_OK(compare(g.dx, r.dx, kBackwardTol, "dx"));
    AE_REQUIRE_OK(compare(g.dgamma, r.dgamma, kBackwardTol, "dgamma"));
    AE_REQUIRE_OK(compare(g.dbeta, r.dbeta, kBackwardTol, "dbeta"));
  }
}

TEST_CASE("batchnorm train backward agrees with central finite differences") {
  for (const Shape& shape : std::vector<Shape>{{2, 3, 2, 3}, {5, 4}, {1, 3, 3, 2}}) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 51);
    const Tensor w = ae::test::random_tensor(shape, 52);  // loss = sum(y * w)
    auto loss = [&] {
      Tensor rm = in.running_mean.clone(), rv = in.running_var.clone();
      return ae::test::weighted_sum(ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, rm, rv).y, w);
    };
    Tensor rm = in.running_mean.clone(), rv = in.running_var.clone();
    const auto out = ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, rm, rv);
    const auto g = ae::ops::batchnorm_backward_train(in.x, w, in.gamma, out.save_mean, out.save_invstd);
    AE_REQUIRE_OK(compare(g.dx, ae::test::numeric_gradient(in.x, loss, 1e-2), kNumericTol, "dx vs numeric"));
    AE_REQUIRE_OK(compare(g.dgamma, ae::test::numeric_gradient(in.gamma, loss, 1e-2), kNumericTol, "dgamma vs numeric"));
    AE_REQUIRE_OK(compare(g.dbeta, ae::test::numeric_gradient(in.beta, loss, 1e-2), kNumericTol, "dbeta vs numeric"));
  }
}

TEST_CASE("batchnorm eval backward agrees with central finite differences") {
  for (const Shape& shape : std::vector<Shape>{{2, 3, 2, 3}, {5, 4}, {1, 1, 1, 3}}) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 61);
    const Tensor w = ae::test::random_tensor(shape, 62);
    auto loss = [&] {
      return ae::test::weighted_sum(
          ae::ops::batchnorm_forward_eval({}, in.x, in.gamma, in.beta, in.running_mean, in.running_var), w);
    };
    const auto g = ae::ops::batchnorm_backward_eval({}, in.x, w, in.gamma, in.running_mean, in.running_var);
    AE_REQUIRE_OK(compare(g.dx, ae::test::numeric_gradient(in.x, loss, 1e-2), kNumericTol, "dx vs numeric"));
    AE_REQUIRE_OK(compare(g.dgamma, ae::test::numeric_gradient(in.gamma, loss, 1e-2), kNumericTol, "dgamma vs numeric"));
    AE_REQUIRE_OK(compare(g.dbeta, ae::test::numeric_gradient(in.beta, loss, 1e-2), kNumericTol, "dbeta vs numeric"));
  }
}

TEST_CASE("batchnorm results are bitwise identical across runs and thread counts") {
  // Large enough for the threaded paths: 4*33*33 = 4356 rows of 16 channels.
  const Shape shape{4, 33, 33, 16};
  const BnInputs in = make_inputs(shape, 71);
  const Tensor dy = ae::test::random_tensor(shape, 72);
  struct Run {
    Tensor y, mean, invstd, rm, rv, dx, dgamma, dbeta, dx_eval, dgamma_eval;
  };
  auto run = [&](int threads) {
    const int saved = ae::thread_count();
    ae::set_thread_count(threads);
    Run r{};
    r.rm = in.running_mean.clone();
    r.rv = in.running_var.clone();
    const auto f = ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, r.rm, r.rv);
    const auto b = ae::ops::batchnorm_backward_train(in.x, dy, in.gamma, f.save_mean, f.save_invstd);
    const auto e = ae::ops::batchnorm_backward_eval({}, in.x, dy, in.gamma, r.rm, r.rv);
    r.y = f.y, r.mean = f.save_mean, r.invstd = f.save_invstd;
    r.dx = b.dx, r.dgamma = b.dgamma, r.dbeta = b.dbeta, r.dx_eval = e.dx, r.dgamma_eval = e.dgamma;
    ae::set_thread_count(saved);
    return r;
  };
  const Run a = run(2), b = run(2), c = run(1), d = run(3);
  for (const Run* other : {&b, &c, &d}) {
    CHECK(bitwise_equal(a.y, other->y));
    CHECK(bitwise_equal(a.mean, other->mean));
    CHECK(bitwise_equal(a.invstd, other->invstd));
    CHECK(bitwise_equal(a.rm, other->rm));
    CHECK(bitwise_equal(a.rv, other->rv));
    CHECK(bitwise_equal(a.dx, other->dx));
    CHECK(bitwise_equal(a.dgamma, other->dgamma));
    CHECK(bitwise_equal(a.dbeta, other->dbeta));
    CHECK(bitwise_equal(a.dx_eval, other->dx_eval));
    CHECK(bitwise_equal(a.dgamma_eval, other->dgamma_eval));
  }
}

TEST_CASE("per-channel row reductions give the same double bits for any thread count") {
  // Double sums of float data almost never change the rounded float result, so the BN test
  // above cannot see a thread-dependent summation order. Here the values span 40 orders of
  // magnitude, so any change of order shows in the double sums themselves.
  const int64_t rows = 5000, channels = 8;
  std::vector<double> values(static_cast<std::size_t>(rows * channels));
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double u = ae::philox::uniform(99, i), e = ae::philox::uniform(100, i);
    values[i] = (u - 0.5) * std::pow(10.0, 40.0 * e - 20.0);
  }
  auto sums = [&](int threads) {
    const int saved = ae::thread_count();
    ae::set_thread_count(threads);
    std::vector<double> out(static_cast<std::size_t>(2 * channels));
    ae::cpu::reduce_rows<2>(
        rows, channels,
        [&](int64_t r, double* acc) {
          for (int64_t j = 0; j < channels; ++j) {
            acc[j] += values[r * channels + j];
            acc[channels + j] += 1.0;
          }
        },
        out.data());
    ae::set_thread_count(saved);
    return out;
  };
  const std::vector<double> one = sums(1);
  for (int threads : {2, 3, 5}) {
    CAPTURE(threads);
    const std::vector<double> other = sums(threads);
    CHECK(std::memcmp(one.data(), other.data(), one.size() * sizeof(double)) == 0);
  }
  CHECK(one[channels] == static_cast<double>(rows));  // second sum counts the rows
  // And the order is the natural one within a block: a single block reproduces a plain loop.
  double plain = 0;
  for (int64_t r = 0; r < 10; ++r) plain += values[r * channels];
  std::vector<double> small(2 * channels);
  ae::cpu::reduce_rows<2>(
      10, channels,
      [&](int64_t r, double* acc) {
        for (int64_t j = 0; j < channels; ++j) acc[j] += values[r * channels + j];
      },
      small.data());
  CHECK(small[0] == plain);
}

TEST_CASE("batchnorm train mode refuses a single value per channel") {
  for (const Shape& shape : std::vector<Shape>{{1, 1, 1, 64}, {1, 5}}) {
    BnInputs in = make_inputs(shape, 81);
    const std::string msg = error_of(
        [&] { ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, in.running_mean, in.running_var); });
    CAPTURE(msg);
    CHECK(msg.find("batchnorm_forward_train") != std::string::npos);
    CHECK(msg.find("at least 2") != std::string::npos);
    CHECK(msg.find(ae::shape_str(shape)) != std::string::npos);
  }
}

TEST_CASE("batchnorm argument errors name the op, the argument and the shapes") {
  BnInputs in = make_inputs({2, 3, 3, 4}, 91);
  const Tensor c5 = Tensor::zeros({5});
  require_error([&] { ae::ops::batchnorm_forward_train({}, in.x, c5, in.beta, in.running_mean, in.running_var); },
                {"batchnorm_forward_train", "gamma", "[5]", "[4]", "[2,3,3,4]"});
  require_error([&] { ae::ops::batchnorm_forward_train({}, in.x, in.gamma, c5, in.running_mean, in.running_var); },
                {"batchnorm_forward_train", "beta", "[5]"});
  Tensor bad_rv = Tensor::zeros({4, 1});
  require_error([&] { ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, in.running_mean, bad_rv); },
                {"batchnorm_forward_train", "running_var", "[4,1]"});
  require_error([&] { ae::ops::batchnorm_forward_eval({}, in.x, in.gamma, in.beta, c5, in.running_var); },
                {"batchnorm_forward_eval", "running_mean", "[5]"});
  const Tensor dy_bad = Tensor::zeros({2, 3, 3, 5});
  require_error([&] { ae::ops::batchnorm_backward_train(in.x, dy_bad, in.gamma, in.running_mean, in.running_var); },
                {"batchnorm_backward_train", "dy", "[2,3,3,5]", "[2,3,3,4]"});
  require_error([&] { ae::ops::batchnorm_backward_train(in.x, in.x, in.gamma, c5, in.running_var); },
                {"batchnorm_backward_train", "save_mean", "[5]"});
  require_error([&] { ae::ops::batchnorm_backward_train(in.x, in.x, in.gamma, in.running_mean, Tensor()); },
                {"batchnorm_backward_train", "save_invstd", "undefined"});
  require_error([&] { ae::ops::batchnorm_backward_eval({}, in.x, dy_bad, in.gamma, in.running_mean, in.running_var); },
                {"batchnorm_backward_eval", "dy"});
  const Tensor x_u8 = Tensor::zeros({2, 4}, ae::DType::u8);
  require_error([&] { ae::ops::batchnorm_forward_eval({}, x_u8, in.gamma, in.beta, in.running_mean, in.running_var); },
                {"batchnorm_forward_eval", "x", "u8", "f32"});
  const Tensor x_1d = Tensor::zeros({4});
  require_error([&] { ae::ops::batchnorm_forward_eval({}, x_1d, in.gamma, in.beta, in.running_mean, in.running_var); },
                {"batchnorm_forward_eval", "x", "at least 2 dimensions"});
  ae::ops::BatchNormParams bad_eps;
  bad_eps.eps = -1.0f;
  require_error(
      [&] { ae::ops::batchnorm_forward_eval(bad_eps, in.x, in.gamma, in.beta, in.running_mean, in.running_var); },
      {"batchnorm_forward_eval", "eps"});
}

TEST_CASE("batchnorm train backward through a ReLU (relu_y): relu_backward then the op, bit for bit") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    BnInputs in = make_inputs(shape, 71);
    Tensor rm = in.running_mean.clone(), rv = in.running_var.clone();
    const auto out = ae::ops::batchnorm_forward_train({}, in.x, in.gamma, in.beta, rm, rv);
    const Tensor residual = ae::test::random_tensor(shape, 72);
    const Tensor y = ae::ops::add_relu(out.y, residual);  // relu(bn(x) + residual): a block's output
    const Tensor dy = ae::test::random_tensor(shape, 73);
    const auto fused = ae::ops::batchnorm_backward_train(in.x, dy, in.gamma, out.save_mean, out.save_invstd, y);
    const auto ref = ae::ops::batchnorm_backward_train(in.x, ae::ops::relu_backward(y, dy), in.gamma, out.save_mean,
                                                       out.save_invstd);
    CHECK(bitwise_equal(fused.dx, ref.dx));
    CHECK(bitwise_equal(fused.dgamma, ref.dgamma));
    CHECK(bitwise_equal(fused.dbeta, ref.dbeta));
    // The mask mattered: some outputs were clamped, and without it the gradient differs.
    CHECK(!bitwise_equal(fused.dx, ae::ops::batchnorm_backward_train(in.x, dy, in.gamma, out.save_mean,
                                                                     out.save_invstd).dx));
  }
  BnInputs in = make_inputs({2, 3, 3, 4}, 74);
  require_error([&] { ae::ops::batchnorm_backward_train(in.x, in.x, in.gamma, in.running_mean, in.running_var,
                                                        ae::test::random_tensor({2, 3, 3, 5}, 75)); },
                {"batchnorm_backward_train", "relu_y", "[2,3,3,5]"});
}

// loss = sum(w * relu(bn_train(x))) at a point where every bn output is at least 0.28 from the
// ReLU's kink (xhat = +-0.29, +-0.88, +-1.46 per channel, gamma 1.3, beta 0.1), so the central
// differences (eps 1e-3) never straddle it.
TEST_CASE("batchnorm train backward through a ReLU agrees with central finite differences") {
  const float col[6] = {-2.5f, 0.5f, 1.5f, -0.5f, 2.5f, -1.5f};
  Tensor x = Tensor::empty({6, 2});
  for (int r = 0; r < 6; ++r) {
    x.f32()[r * 2] = 0.7f * col[r] + 0.2f;
    x.f32()[r * 2 + 1] = -1.1f * col[(r + 2) % 6] - 0.4f;
  }
  Tensor gamma = Tensor::full({2}, 1.3f), beta = Tensor::full({2}, 0.1f);
  const Tensor w = ae::test::random_tensor({6, 2}, 81);
  auto forward = [&] {
    Tensor rm = Tensor::zeros({2}), rv = Tensor::full({2}, 1.0f);
    return ae::ops::batchnorm_forward_train({}, x, gamma, beta, rm, rv);
  };
  auto loss = [&] { return ae::test::weighted_sum(ae::ops::relu_forward(forward().y), w); };
  const auto out = forward();
  const Tensor y = ae::ops::relu_forward(out.y);
  for (float v : out.y.to_vector()) REQUIRE(std::fabs(v) > 0.25f);  // away from the kink, as built
  const auto g = ae::ops::batchnorm_backward_train(x, w, gamma, out.save_mean, out.save_invstd, y);
  AE_REQUIRE_OK(compare(g.dx, ae::test::numeric_gradient(x, loss, 1e-3), kNumericTol, "dx vs numeric"));
  AE_REQUIRE_OK(compare(g.dgamma, ae::test::numeric_gradient(gamma, loss, 1e-3), kNumericTol, "dgamma vs numeric"));
  AE_REQUIRE_OK(compare(g.dbeta, ae::test::numeric_gradient(beta, loss, 1e-3), kNumericTol, "dbeta vs numeric"));
}

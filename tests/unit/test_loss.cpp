// Mean-squared-error loss (kernels/loss.cpp, kernels/cpu/loss_cpu.cpp): forward against a
// double-precision sum, backward against the formula and central finite differences, errors.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using ae::test::require_error;

namespace {

double mse_reference(const Tensor& pred, const Tensor& target) {
  const std::vector<double> a = test::to_double(pred), b = test::to_double(target);
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return s / static_cast<double>(a.size());
}

const std::vector<Shape> kShapes{{1}, {1, 1}, {7, 5}, {13, 17}, {2, 1}, {32, 1}, {2, 7, 5, 3}, {1000}};

}  // namespace

TEST_CASE("mse forward: hand-worked") {
  Tensor pred = Tensor::from_vector({2, 2}, {1.0f, 2.0f, 3.0f, 4.0f});
  Tensor target = Tensor::from_vector({2, 2}, {1.0f, 0.0f, 4.0f, 1.0f});
  Tensor loss = ops::mse_loss_forward(pred, target);
  CHECK(loss.shape() == Shape{1});
  CHECK(loss.item() == doctest::Approx(3.5).epsilon(1e-7));  // (0 + 4 + 1 + 9) / 4
}

TEST_CASE("mse forward and backward match the formulas on awkward shapes") {
  uint64_t seed = 0;
  for (const Shape& s : kShapes) {
    INFO(shape_str(s));
    Tensor pred = test::random_tensor(s, 10 + seed, -3, 3);
    Tensor target = test::random_tensor(s, 20 + seed++, -3, 3);
    const double ref = mse_reference(pred, target);
    AE_REQUIRE_OK(test::compare(ops::mse_loss_forward(pred, target), std::vector<double>{ref}, {1e-7, 1e-6, 1e-12},
                                "mse " + shape_str(s)));
    for (float dloss : {1.0f, -0.5f, 3.0f}) {
      const std::vector<double> a = test::to_double(pred), b = test::to_double(target);
      std::vector<double> grad(a.size());
      for (std::size_t i = 0; i < a.size(); ++i) grad[i] = 2.0 * (a[i] - b[i]) / double(a.size()) * dloss;
      Tensor got = ops::mse_loss_backward(pred, target, dloss);
      CHECK(got.shape() == s);
      AE_REQUIRE_OK(test::compare(got, grad, {1e-7, 1e-6, 1e-12}, "mse grad " + shape_str(s)));
    }
  }
}

TEST_CASE("mse backward matches central finite differences") {
  for (const Shape& s : {Shape{7, 5}, Shape{1}, Shape{2, 3, 1}}) {
    Tensor pred = test::random_tensor(s, 30, -2, 2);
    Tensor target = test::random_tensor(s, 31, -2, 2);
    auto loss = [&] { return static_cast<double>(ops::mse_loss_forward(pred, target).item()); };
    Tensor grad = ops::mse_loss_backward(pred, target);
    AE_REQUIRE_OK(test::compare(grad, test::numeric_gradient(pred, loss, 1e-2), {1e-4, 1e-3, 1e-6},
                                "mse finite differences " + shape_str(s)));
  }
}

TEST_CASE("mse argument errors name the op, the argument and the shapes") {
  require_error([&] { ops::mse_loss_forward(Tensor::zeros({4, 1}), Tensor::zeros({4})); },
                {"mse_loss_forward", "target", "[4]", "expected [4,1]"});
  require_error([&] { ops::mse_loss_backward(Tensor::zeros({3}), Tensor::zeros({4})); },
                {"mse_loss_backward", "target", "[4]", "expected [3]"});
  require_error([&] { ops::mse_loss_forward(Tensor::zeros({0}), Tensor::zeros({0})); },
                {"mse_loss_forward", "pred", "[0]", "empty"});
  require_error([&] { ops::mse_loss_forward(Tensor::zeros({2}, DType::u8), Tensor::zeros({2})); },
                {"mse_loss_forward", "pred", "f32"});
  require_error([&] { ops::mse_loss_forward(Tensor::zeros({2}), Tensor()); },
                {"mse_loss_forward", "target", "undefined"});
}

// Elementwise ops on the CPU backend (add, scale, add_inplace, add_relu) against double loops on
// awkward shapes, including sizes that take the threaded path, in-place aliasing, and argument
// errors. Each result is one float operation of float inputs, so the reference rounded to
// float must match exactly.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

namespace {

using ae::Shape;
using ae::Tensor;
using ae::test::compare;
using ae::test::require_error;
using ae::test::Tolerance;

const Tolerance kExact{0, 0, 0};

// 40000 elements: above the size at which the loops go multi-threaded.
const std::vector<Shape> kAwkwardShapes = {{2, 7, 5, 3}, {1, 13, 17, 5}, {3, 1, 1, 64}, {4, 5},
                                           {1},          {0, 3},         {8, 50, 100}};

// The double result rounded to float once: what a single float operation must give.
std::vector<double> rounded(const std::vector<double>& v) {
  std::vector<double> out;
  for (double e : v) out.push_back(static_cast<float>(e));
  return out;
}

template <typename F>
std::vector<double> ref_map(const Tensor& a, const Tensor& b, F f) {
  const std::vector<double> u = ae::test::to_double(a), v = ae::test::to_double(b);
  std::vector<double> out;
  for (std::size_t i = 0; i < u.size(); ++i) out.push_back(f(u[i], v[i]));
  return rounded(out);
}

}  // namespace

TEST_CASE("add, scale and add_relu match a double reference rounded once") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    const Tensor a = ae::test::random_tensor(shape, 1, -3.0f, 3.0f);
    const Tensor b = ae::test::random_tensor(shape, 2, -3.0f, 3.0f);
    AE_REQUIRE_OK(compare(ae::ops::add(a, b), ref_map(a, b, [](double u, double v) { return u + v; }), kExact, "add"));
    AE_REQUIRE_OK(compare(ae::ops::add_relu(a, b),
                          ref_map(a, b, [](double u, double v) { return u + v > 0 ? u + v : 0.0; }), kExact,
                          "add_relu"));
    AE_REQUIRE_OK(compare(ae::ops::scale(a, -0.37f),
                          ref_map(a, a, [](double u, double) { return static_cast<double>(-0.37f) * u; }), kExact,
                          "scale"));
    // The inputs are left untouched.
    AE_REQUIRE_OK(compare(a, ae::test::random_tensor(shape, 1, -3.0f, 3.0f), kExact, "a unchanged"));
  }
}

TEST_CASE("add_relu is relu(a + b) where the sum cancels to zero or goes negative") {
  const Tensor a = Tensor::from_vector({5}, {1.0f, -1.0f, 2.0f, -0.5f, 0.25f});
  const Tensor b = Tensor::from_vector({5}, {-1.0f, 0.5f, -3.0f, 1.0f, 0.25f});
  AE_REQUIRE_OK(compare(ae::ops::add_relu(a, b), std::vector<double>{0, 0, 0, 0.5, 0.5}, kExact, "add_relu"));
}

TEST_CASE("add_inplace computes a += s*b, also when b is a itself") {
  for (const Shape& shape : kAwkwardShapes) {
    for (float s : {1.0f, -0.5f, 3.25f}) {
      CAPTURE(ae::shape_str(shape));
      CAPTURE(s);
      Tensor a = ae::test::random_tensor(shape, 3);
      const Tensor b = ae::test::random_tensor(shape, 4);
      // Two float roundings (s*b, then the sum), matched by doing the same in the reference.
      std::vector<double> ref;
      const std::vector<float> av = a.to_vector(), bv = b.to_vector();
      for (std::size_t i = 0; i < av.size(); ++i) ref.push_back(av[i] + s * bv[i]);
      ae::ops::add_inplace(a, b, s);
      AE_REQUIRE_OK(compare(a, ref, kExact, "add_inplace"));

      Tensor self = ae::test::random_tensor(shape, 5);
      std::vector<double> self_ref;
      for (float e : self.to_vector()) self_ref.push_back(e + s * e);
      ae::ops::add_inplace(self, self, s);
      AE_REQUIRE_OK(compare(self, self_ref, kExact, "add_inplace aliased"));
    }
  }
  // The default factor is 1.
  Tensor a = Tensor::from_vector({2}, {1.0f, 2.0f});
  ae::ops::add_inplace(a, Tensor::from_vector({2}, {0.5f, -4.0f}));
  AE_REQUIRE_OK(compare(a, std::vector<double>{1.5, -2.0}, kExact, "add_inplace default s"));
}

TEST_CASE("add_inplace updates only the view it is given") {
  Tensor whole = Tensor::full({5, 3}, 1.0f);
  Tensor rows = whole.rows(1, 3);
  ae::ops::add_inplace(rows, Tensor::full({2, 3}, 2.0f), 1.0f);
  AE_REQUIRE_OK(compare(whole, std::vector<double>{1, 1, 1, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1}, kExact, "whole"));
  // Disjoint views of one storage are fine.
  ae::ops::add_inplace(rows, whole.rows(3, 5), 0.5f);
  AE_REQUIRE_OK(compare(whole, std::vector<double>{1, 1, 1, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 1, 1, 1, 1, 1, 1}, kExact,
                        "after an add from a disjoint view"));
}

TEST_CASE("elementwise argument errors name the op and the shapes") {
  const Tensor a = ae::test::random_tensor({2, 3, 4}, 6);
  const Tensor bad = Tensor::zeros({2, 4, 3});
  const Tensor u8 = Tensor::zeros({2, 3, 4}, ae::DType::u8);
  require_error([&] { ae::ops::add(a, bad); }, {"add", "[2,3,4]", "[2,4,3]"});
  require_error([&] { ae::ops::add_relu(bad, a); }, {"add_relu", "[2,4,3]", "[2,3,4]"});
  require_error([&] { ae::ops::add(a, u8); }, {"add", "b", "u8", "f32"});
  require_error([&] { ae::ops::scale(u8, 2.0f); }, {"scale", "a", "u8"});
  require_error([&] { ae::ops::add(a, Tensor()); }, {"add", "b", "undefined"});
  Tensor target = a.clone();
  require_error([&] { ae::ops::add_inplace(target, bad, 1.0f); }, {"add_inplace", "[2,3,4]", "[2,4,3]"});
  // b a shifted window of a's own storage: the result would depend on evaluation order.
  Tensor storage = Tensor::zeros({10});
  Tensor head = storage.view(0, {6}), shifted = storage.view(2, {6});
  require_error([&] { ae::ops::add_inplace(head, shifted, 1.0f); }, {"add_inplace", "overlapping"});
}

// ReLU, PReLU and dropout on the CPU backend: forward and backward against naive double loops
// on awkward shapes, backward against central finite differences (at points away from the
// kink at 0), dropout's mask as a pure function of (seed, offset), argument errors, and
// bitwise determinism of the one reduction (PReLU's slope gradient) across thread counts.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

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
using ae::test::require_error;
using ae::test::Tolerance;

const Tolerance kExact{0, 0, 0};
// One float product per element (slope * x, x / (1-p)): a couple of ulps from the double reference.
const Tolerance kOneRounding{1e-7, 1e-6, 1e-12};
const Tolerance kReduceTol{1e-5, 1e-5, 1e-12};
const Tolerance kNumericTol{1e-3, 1e-2, 1e-6};

const std::vector<Shape> kAwkwardShapes = {{2, 7, 5, 3}, {1, 13, 17, 5}, {3, 1, 1, 64}, {4, 5}, {1}, {0, 3}};

// Values in (-1.1, -0.1] U [0.1, 1.1): at least 0.1 from ReLU's kink, so finite differences
// with step 1e-2 never cross it.
Tensor away_from_zero(const Shape& shape, uint64_t seed) {
  Tensor t = ae::test::random_tensor(shape, seed);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = p[i] < 0 ? p[i] - 0.1f : p[i] + 0.1f;
  return t;
}

int64_t channels_of(const Tensor& x, const Tensor& slope) { return slope.numel() == 1 ? 1 : x.dim(-1); }

std::vector<double> ref_prelu(const Tensor& x, const Tensor& slope) {
  const std::vector<double> v = ae::test::to_double(x), a = ae::test::to_double(slope);
  const int64_t c = channels_of(x, slope);
  std::vector<double> y(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) y[i] = v[i] > 0 ? v[i] : a[i % c] * v[i];
  return y;
}

}  // namespace

// ---------------------------------------------------------------- ReLU

TEST_CASE("relu forward and backward match a double reference") {
  for (const Shape& shape : kAwkwardShapes) {
    CAPTURE(ae::shape_str(shape));
    Tensor x = ae::test::random_tensor(shape, 1);
    if (x.numel() > 2) {  // both zeros give 0 and gradient 0
      x.f32()[1] = 0.0f;
      x.f32()[2] = -0.0f;
    }
    const Tensor dy = ae::test::random_tensor(shape, 2);
    const Tensor y = ae::ops::relu_forward(x);
    const Tensor dx = ae::ops::relu_backward(y, dy);
    const std::vector<double> xv = ae::test::to_double(x), dv = ae::test::to_double(dy);
    std::vector<double> y_ref, dx_ref;
    for (std::size_t i = 0; i < xv.size(); ++i) {
      y_ref.push_back(xv[i] > 0 ? xv[i] : 0.0);
      dx_ref.push_back(xv[i] > 0 ? dv[i] : 0.0);
    }
    AE_REQUIRE_OK(compare(y, y_ref, kExact, "relu y"));
    AE_REQUIRE_OK(compare(dx, dx_ref, kExact, "relu dx"));
  }
}

TEST_CASE("relu backward agrees with central finite differences") {
  Tensor x = away_from_zero({2, 3, 3, 5}, 3);
  const Tensor w = ae::test::random_tensor(x.shape(), 4);
  auto loss = [&] { return ae::test::weighted_sum(ae::ops::relu_forward(x), w); };
  const Tensor dx = ae::ops::relu_backward(ae::ops::relu_forward(x), w);
  AE_REQUIRE_OK(compare(dx, ae::test::numeric_gradient(x, loss, 1e-2), kNumericTol, "relu dx vs numeric"));
}

// ---------------------------------------------------------------- PReLU

TEST_CASE("prelu forward and backward match a double reference, shared and per-channel slope") {
  for (const Shape& shape : kAwkwardShapes) {
    for (bool per_channel : {false, true}) {
      CAPTURE(ae::shape_str(shape));
      CAPTURE(per_channel);
      const Tensor x = ae::test::random_tensor(shape, 5);
      const Tensor dy = ae::test::random_tensor(shape, 6);
      const Tensor slope = ae::test::random_tensor({per_channel ? shape.back() : 1}, 7, -0.5f, 0.5f);
      AE_REQUIRE_OK(compare(ae::ops::prelu_forward(x, slope), ref_prelu(x, slope), kOneRounding, "prelu y"));

      const auto g = ae::ops::prelu_backward(x, slope, dy);
      const std::vector<double> xv = ae::test::to_double(x), dv = ae::test::to_double(dy),
                                a = ae::test::to_double(slope);
      const int64_t c = channels_of(x, slope);
      std::vector<double> dx_ref(xv.size()), dslope_ref(a.size(), 0.0);
      for (std::size_t i = 0; i < xv.size(); ++i) {
        dx_ref[i] = xv[i] > 0 ? dv[i] : a[i % c] * dv[i];
        if (xv[i] <= 0) dslope_ref[i % c] += dv[i] * xv[i];
      }
      AE_REQUIRE_OK(compare(g.dx, dx_ref, kOneRounding, "prelu dx"));
      AE_REQUIRE_OK(compare(g.dslope, dslope_ref, kReduceTol, "prelu dslope"));
      CHECK(g.dslope.shape() == slope.shape());
    }
  }
}

TEST_CASE("prelu backward agrees with central finite differences") {
  for (const Shape& slope_shape : std::vector<Shape>{{1}, {5}}) {
    CAPTURE(ae::shape_str(slope_shape));
    Tensor x = away_from_zero({2, 3, 3, 5}, 8);
    Tensor slope = ae::test::random_tensor(slope_shape, 9, 0.05f, 0.4f);
    const Tensor w = ae::test::random_tensor(x.shape(), 10);
    auto loss = [&] { return ae::test::weighted_sum(ae::ops::prelu_forward(x, slope), w); };
    const auto g = ae::ops::prelu_backward(x, slope, w);
    AE_REQUIRE_OK(compare(g.dx, ae::test::numeric_gradient(x, loss, 1e-2), kNumericTol, "prelu dx vs numeric"));
    AE_REQUIRE_OK(
        compare(g.dslope, ae::test::numeric_gradient(slope, loss, 1e-2), kNumericTol, "prelu dslope vs numeric"));
  }
}

TEST_CASE("prelu slope gradient is bitwise identical across runs and thread counts") {
  const Tensor x = ae::test::random_tensor({6, 40, 40, 8}, 11);  // 76800 elements: threaded path
  const Tensor dy = ae::test::random_tensor(x.shape(), 12);
  for (const Shape& slope_shape : std::vector<Shape>{{1}, {8}}) {
    const Tensor slope = ae::test::random_tensor(slope_shape, 13, 0.0f, 0.3f);
    auto run = [&](int threads) {
      const int saved = ae::thread_count();
      ae::set_thread_count(threads);
      ae::ops::PReluGrads g = ae::ops::prelu_backward(x, slope, dy);
      ae::set_thread_count(saved);
      return g;
    };
    const auto a = run(2);
    for (int threads : {2, 1, 3}) {
      const auto b = run(threads);
      CHECK(bitwise_equal(a.dx, b.dx));
      CHECK(bitwise_equal(a.dslope, b.dslope));
    }
  }
}

// ---------------------------------------------------------------- dropout

TEST_CASE("dropout keeps element i exactly when philox::uniform(seed, offset + i) >= p") {
  for (const Shape& shape : std::vector<Shape>{{2, 7, 5, 3}, {4, 256}, {1}}) {
    CAPTURE(ae::shape_str(shape));
    const Tensor x = ae::test::random_tensor(shape, 14);
    ae::ops::DropoutParams p;
    p.p = 0.3f;
    p.seed = 1234567890123ull;
    p.offset = 77;
    const auto out = ae::ops::dropout_forward(p, x);
    REQUIRE(out.mask.dtype() == ae::DType::u8);
    REQUIRE(out.mask.shape() == shape);
    const uint8_t* m = out.mask.data<uint8_t>();
    const std::vector<double> xv = ae::test::to_double(x);
    std::vector<double> y_ref(xv.size());
    int64_t wrong_mask = 0;
    for (std::size_t i = 0; i < xv.size(); ++i) {
      const bool keep = ae::philox::uniform(p.seed, p.offset + i) >= p.p;
      wrong_mask += (m[i] != (keep ? 1 : 0));
      y_ref[i] = keep ? xv[i] / (1.0 - p.p) : 0.0;
    }
    CHECK(wrong_mask == 0);
    AE_REQUIRE_OK(compare(out.y, y_ref, kOneRounding, "dropout y"));

    const Tensor dy = ae::test::random_tensor(shape, 15);
    const Tensor dx = ae::ops::dropout_backward(p, out.mask, dy);
    const std::vector<double> dv = ae::test::to_double(dy);
    std::vector<double> dx_ref(dv.size());
    for (std::size_t i = 0; i < dv.size(); ++i) dx_ref[i] = m[i] ? dv[i] / (1.0 - p.p) : 0.0;
    AE_REQUIRE_OK(compare(dx, dx_ref, kOneRounding, "dropout dx"));
  }
}

TEST_CASE("dropout mask is reproducible from (seed, offset) and changes with either") {
  const Tensor x = ae::test::random_tensor({64, 256}, 16);
  ae::ops::DropoutParams p;
  p.seed = 42;
  p.offset = 1000;
  const auto a = ae::ops::dropout_forward(p, x);
  const auto b = ae::ops::dropout_forward(p, x);
  CHECK(bitwise_equal(a.mask, b.mask));
  CHECK(bitwise_equal(a.y, b.y));

  // Another offset (even one not a multiple of Philox's 4-word blocks) gives another mask...
  auto fraction_equal = [](const Tensor& m1, const Tensor& m2) {
    const uint8_t* u = m1.data<uint8_t>();
    const uint8_t* v = m2.data<uint8_t>();
    int64_t same = 0;
    for (int64_t i = 0; i < m1.numel(); ++i) same += u[i] == v[i];
    return static_cast<double>(same) / static_cast<double>(m1.numel());
  };
  ae::ops::DropoutParams q = p;
  q.offset = p.offset + 3;
  const auto c = ae::ops::dropout_forward(q, x);
  CHECK(fraction_equal(a.mask, c.mask) < 0.6);  // independent masks at p=0.5 agree ~50%
  ae::ops::DropoutParams s = p;
  s.seed = 43;
  CHECK(fraction_equal(a.mask, ae::ops::dropout_forward(s, x).mask) < 0.6);

  // ...and it is the same stream shifted: element i at offset+3 is element i+3 at offset.
  const uint8_t* ma = a.mask.data<uint8_t>();
  const uint8_t* mc = c.mask.data<uint8_t>();
  int64_t mismatched = 0;
  for (int64_t i = 0; i + 3 < x.numel(); ++i) mismatched += ma[i + 3] != mc[i];
  CHECK(mismatched == 0);

  // A threaded run draws the same mask as a single thread.
  const int saved = ae::thread_count();
  ae::set_thread_count(1);
  const auto single = ae::ops::dropout_forward(p, x);
  ae::set_thread_count(saved);
  CHECK(bitwise_equal(single.mask, a.mask));
}

TEST_CASE("dropout with a device_offset draws the mask of offset + the tensor's value, read when it runs") {
  const Tensor x = ae::test::random_tensor({8, 96}, 17);
  ae::ops::DropoutParams p;
  p.p = 0.4f;
  p.seed = 99;
  p.offset = 5;
  p.device_offset = Tensor::zeros({1}, ae::DType::i64);
  for (const int64_t step_offset : {int64_t{0}, int64_t{3}, int64_t{7} << 32}) {
    CAPTURE(step_offset);
    *p.device_offset.data<int64_t>() = step_offset;  // written after the params were made
    ae::ops::DropoutParams plain = p;
    plain.device_offset = Tensor();
    plain.offset = p.offset + static_cast<uint64_t>(step_offset);
    const auto a = ae::ops::dropout_forward(p, x);
    const auto b = ae::ops::dropout_forward(plain, x);
    CHECK(bitwise_equal(a.mask, b.mask));
    CHECK(bitwise_equal(a.y, b.y));
  }
  ae::ops::DropoutParams bad = p;
  bad.device_offset = Tensor::zeros({1});
  require_error([&] { ae::ops::dropout_forward(bad, x); }, {"dropout_forward", "device_offset", "f32", "i64 [1]"});
  bad.device_offset = Tensor::zeros({2}, ae::DType::i64);
  require_error([&] { ae::ops::dropout_forward(bad, x); }, {"dropout_forward", "device_offset", "[2]"});
}

TEST_CASE("dropout keeps a fraction near 1-p and p=0 is the identity") {
  const Tensor x = ae::test::random_tensor({200000}, 17);
  for (float drop : {0.1f, 0.5f, 0.9f}) {
    CAPTURE(drop);
    ae::ops::DropoutParams p;
    p.p = drop;
    p.seed = 7;
    const auto out = ae::ops::dropout_forward(p, x);
    const uint8_t* m = out.mask.data<uint8_t>();
    int64_t kept = 0;
    for (int64_t i = 0; i < x.numel(); ++i) kept += m[i];
    const double fraction = static_cast<double>(kept) / static_cast<double>(x.numel());
    const double sigma = std::sqrt(drop * (1.0 - drop) / static_cast<double>(x.numel()));
    CHECK(std::fabs(fraction - (1.0 - drop)) < 5 * sigma);
  }
  ae::ops::DropoutParams none;
  none.p = 0.0f;
  const auto out = ae::ops::dropout_forward(none, x);
  CHECK(bitwise_equal(out.y, x));
  const uint8_t* m = out.mask.data<uint8_t>();
  int64_t kept = 0;
  for (int64_t i = 0; i < x.numel(); ++i) kept += m[i];
  CHECK(kept == x.numel());
  const Tensor dy = ae::test::random_tensor(x.shape(), 18);
  CHECK(bitwise_equal(ae::ops::dropout_backward(none, out.mask, dy), dy));
}

TEST_CASE("dropout backward agrees with central finite differences for a fixed mask") {
  Tensor x = ae::test::random_tensor({3, 4, 5}, 19);
  const Tensor w = ae::test::random_tensor(x.shape(), 20);
  ae::ops::DropoutParams p;
  p.p = 0.4f;
  p.seed = 5;
  auto loss = [&] { return ae::test::weighted_sum(ae::ops::dropout_forward(p, x).y, w); };
  const Tensor dx = ae::ops::dropout_backward(p, ae::ops::dropout_forward(p, x).mask, w);
  AE_REQUIRE_OK(compare(dx, ae::test::numeric_gradient(x, loss, 1e-2), kNumericTol, "dropout dx vs numeric"));
}

// ---------------------------------------------------------------- errors

TEST_CASE("activation argument errors name the op, the argument and the shapes") {
  const Tensor x = ae::test::random_tensor({2, 3, 4}, 21);
  const Tensor bad = Tensor::zeros({2, 3, 5});
  const Tensor u8 = Tensor::zeros({2, 3, 4}, ae::DType::u8);

  require_error([&] { ae::ops::relu_forward(u8); }, {"relu_forward", "x", "u8", "f32"});
  require_error([&] { ae::ops::relu_backward(x, bad); }, {"relu_backward", "dy", "[2,3,5]", "[2,3,4]"});
  require_error([&] { ae::ops::relu_forward(Tensor()); }, {"relu_forward", "undefined"});

  require_error([&] { ae::ops::prelu_forward(x, Tensor::zeros({3})); },
                {"prelu_forward", "slope", "[3]", "[1]", "[4]", "[2,3,4]"});
  require_error([&] { ae::ops::prelu_forward(x, Tensor::zeros({1, 4})); }, {"prelu_forward", "slope", "[1,4]"});
  require_error([&] { ae::ops::prelu_backward(x, Tensor::zeros({1}), bad); },
                {"prelu_backward", "dy", "[2,3,5]", "[2,3,4]"});
  require_error([&] { ae::ops::prelu_backward(x, Tensor::zeros({4}, ae::DType::u8), x); },
                {"prelu_backward", "slope", "u8"});

  for (float p : {1.0f, -0.1f, 1.5f, std::nanf("")}) {
    ae::ops::DropoutParams dp;
    dp.p = p;
    require_error([&] { ae::ops::dropout_forward(dp, x); }, {"dropout_forward", "p =", "[0, 1)"});
    require_error([&] { ae::ops::dropout_backward(dp, u8, x); }, {"dropout_backward", "p =", "[0, 1)"});
  }
  ae::ops::DropoutParams dp;
  require_error([&] { ae::ops::dropout_backward(dp, x, x); }, {"dropout_backward", "mask", "f32", "u8"});
  require_error([&] { ae::ops::dropout_backward(dp, Tensor::zeros({2, 3, 5}, ae::DType::u8), x); },
                {"dropout_backward", "mask", "[2,3,5]", "[2,3,4]"});
  require_error([&] { ae::ops::dropout_forward(dp, u8); }, {"dropout_forward", "x", "u8"});
}

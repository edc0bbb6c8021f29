// Elementwise ops on the CPU backend (add, scale, add_inplace, add_relu) against double loops on
// awkward shapes, including sizes that take the threaded path, in-place aliasing, and argument
// errors. Each result is one float operation of float inputs, so the reference rounded to
// float must match exactly. The f32 <-> bf16 cast against a rounding reference that compares
// distances (not the bit trick it tests), at the awkward points and over every bf16.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
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

// ---- cast: f32 <-> bf16 ---------------------------------------------------------------------

namespace {

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
float float_of(uint32_t u) { return std::bit_cast<float>(u); }

// Round to the nearest bf16 by comparing distances in double (not by the bit trick under test):
// the two bf16 neighbours of x are its truncation and the next value away from zero.
uint16_t reference_bf16(uint32_t u) {
  const float x = float_of(u);
  if (std::isnan(x)) return 0x7FFF;
  if (std::isinf(x)) return static_cast<uint16_t>(u >> 16);
  const uint16_t lo = static_cast<uint16_t>(u >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double dlo = std::fabs(static_cast<double>(x) - static_cast<double>(float_of(uint32_t{lo} << 16)));
  // hi may be the infinity past the largest finite bf16: its "value" is then 2^128 (the next
  // binade's first value), which is what rounding to nearest compares against.
  const bool hi_inf = (hi & 0x7FFF) == 0x7F80;
  const double hi_value = hi_inf ? std::copysign(std::ldexp(1.0, 128), static_cast<double>(x))
                                 : static_cast<double>(float_of(uint32_t{hi} << 16));
  const double dhi = std::fabs(hi_value - static_cast<double>(x));
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) == 0 ? lo : hi;  // a tie: the even one
}

Tensor f32_of_bits(const std::vector<uint32_t>& bits) {
  Tensor t = Tensor::empty({static_cast<int64_t>(bits.size())});
  std::memcpy(t.raw(), bits.data(), bits.size() * 4);
  return t;
}

std::vector<uint16_t> bf16_bits(const Tensor& t) {
  REQUIRE(t.dtype() == ae::DType::bf16);
  const Tensor h = t.to(ae::Device::cpu());
  std::vector<uint16_t> out(static_cast<std::size_t>(h.numel()));
  std::memcpy(out.data(), h.raw(), out.size() * 2);
  return out;
}

}  // namespace

TEST_CASE("cast to bf16 rounds to nearest even at the awkward points") {
  struct Point {
    uint32_t f32;
    uint16_t bf16;
    const char* what;
  };
  const Point points[] = {
      {0x3F800000, 0x3F80, "1.0 exactly"},
      {0x3F808000, 0x3F80, "a tie with an even truncation stays"},
      {0x3F818000, 0x3F82, "a tie with an odd truncation goes up"},
      {0x3F808001, 0x3F81, "just above half an ulp goes up"},
      {0x3F807FFF, 0x3F80, "just below half an ulp goes down"},
      {0xBF818000, 0xBF82, "negative ties too"},
      {0x7F7FFFFF, 0x7F80, "the largest float overflows to infinity"},
      {0xFF7FFFFF, 0xFF80, "and to -infinity"},
      {0x7F7F7FFF, 0x7F7F, "the largest bf16 below half an ulp stays finite"},
      {0x80000000, 0x8000, "-0 keeps its sign"},
      {0x00000001, 0x0000, "the smallest subnormal rounds to 0"},
      {0x00018000, 0x0002, "subnormal ties round to even (no flush)"},
      {0x00010000, 0x0001, "the smallest bf16 subnormal is exact"},
      {0x7F800000, 0x7F80, "infinity"},
      {0xFF800000, 0xFF80, "-infinity"},
      {0x7FC00000, 0x7FFF, "a quiet NaN becomes the canonical NaN"},
      {0xFFC00001, 0x7FFF, "a negative NaN with payload too"},
      {0x7F800001, 0x7FFF, "a signalling NaN whose payload would truncate to infinity"},
  };
  std::vector<uint32_t> in;
  for (const Point& p : points) in.push_back(p.f32);
  const std::vector<uint16_t> out = bf16_bits(ae::ops::cast(f32_of_bits(in), ae::DType::bf16));
  for (std::size_t i = 0; i < in.size(); ++i) {
    INFO(points[i].what);
    CHECK(out[i] == points[i].bf16);
    CHECK(reference_bf16(in[i]) == points[i].bf16);  // the reference agrees with the table
  }
}

TEST_CASE("cast to bf16 matches a distance-based reference on 2^18 spread bit patterns (threaded)") {
  std::vector<uint32_t> in;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < (1 << 18); ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    in.push_back(static_cast<uint32_t>(state >> 32));
  }
  const std::vector<uint16_t> out = bf16_bits(ae::ops::cast(f32_of_bits(in), ae::DType::bf16));
  int64_t mismatches = 0;
  for (std::size_t i = 0; i < in.size(); ++i) mismatches += out[i] != reference_bf16(in[i]);
  CHECK(mismatches == 0);
}

TEST_CASE("cast to f32 is exact for every bf16, and casting back gives the bf16 again") {
  Tensor b = Tensor::empty({65536}, ae::DType::bf16);
  auto* p = b.data<ae::BFloat16>();
  for (uint32_t i = 0; i < 65536; ++i) p[i].bits = static_cast<uint16_t>(i);
  const Tensor f = ae::ops::cast(b, ae::DType::f32);
  REQUIRE(f.dtype() == ae::DType::f32);
  const float* fp = f.f32();
  const std::vector<uint16_t> back = bf16_bits(ae::ops::cast(f, ae::DType::bf16));
  for (uint32_t i = 0; i < 65536; ++i) {
    const bool nan = (i & 0x7F80) == 0x7F80 && (i & 0x7F) != 0;
    INFO("bf16 bits " << i);
    if (nan) {
      REQUIRE(std::isnan(fp[i]));
      REQUIRE(back[i] == 0x7FFF);
    } else {
      REQUIRE(bits_of(fp[i]) == i << 16);
      REQUIRE(back[i] == i);
    }
  }
  // to_vector widens bf16 the same way.
  const std::vector<float> v = b.to_vector();
  CHECK(bits_of(v[0x3F80]) == 0x3F800000u);
  CHECK(b.desc() == "[65536] bf16 cpu");
  CHECK(ae::dtype_size(ae::DType::bf16) == 2);
}

TEST_CASE("cast of a view reads that view; casting to the own dtype shares the storage") {
  const Tensor a = ae::test::random_tensor({6, 5}, 31);
  const Tensor rows = a.rows(3, 5);  // element offset 15
  const Tensor b = ae::ops::cast(rows, ae::DType::bf16);
  const std::vector<uint16_t> got = bf16_bits(b);
  for (int64_t i = 0; i < 10; ++i) CHECK(got[i] == reference_bf16(bits_of(a.f32()[15 + i])));
  const Tensor same = ae::ops::cast(rows, ae::DType::f32);
  CHECK(same.storage() == a.storage());
  CHECK(same.offset() == rows.offset());
  CHECK(ae::ops::cast(Tensor::empty({0, 3}), ae::DType::bf16).numel() == 0);
}

TEST_CASE("cast refuses what it cannot convert, and f32-only ops refuse bf16 by name") {
  const Tensor i64 = Tensor::zeros({3}, ae::DType::i64);
  const Tensor f = ae::test::random_tensor({2, 3}, 32);
  const Tensor b = ae::ops::cast(f, ae::DType::bf16);
  require_error([&] { ae::ops::cast(i64, ae::DType::f32); }, {"cast", "i64", "f32 <-> bf16"});
  require_error([&] { ae::ops::cast(f, ae::DType::u8); }, {"cast", "to u8", "f32 <-> bf16"});
  require_error([&] { ae::ops::cast(Tensor(), ae::DType::bf16); }, {"cast", "undefined"});
  require_error([&] { ae::ops::add(b, f); }, {"add", "a", "bf16", "must be f32"});
  require_error([&] { ae::ops::relu_forward(b); }, {"relu", "bf16"});
  require_error([&] { b.f32(); }, {"bf16", "accessed as f32"});
}

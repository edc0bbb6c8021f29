// Photo edits of kernels/ops.h (photo_edit_forward / photo_edit_backward_theta) on the CPU backend:
// the forward against an independent double-precision loop written from the documented model (tone
// curve through knot values rather than offsets) on awkward shapes; theta = 0 is the identity bit
// for bit; each parameter moves the image the documented way; dtheta against central finite
// differences of sum(dy*y) in double, is the same bits for any thread count; u8 inputs equal their
// f32 conversion; bad arguments give messages naming the op and the problem.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "runtime/thread_pool.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;

namespace {

using ops::PhotoEditParams;

// ---------------------------------------------------------------- double-precision reference

// The model of kernels/ops.h, step by step, in double. theta has kPhotoEditFixed + K entries.
void reference_pixel(const double x[3], const std::vector<double>& theta, int K, double y[3]) {
  const double e = theta[PhotoEditParams::kExposure], c = theta[PhotoEditParams::kContrast];
  const double s = theta[PhotoEditParams::kSaturation], t = theta[PhotoEditParams::kTemperature];
  const double g = theta[PhotoEditParams::kTint];
  double v[3] = {x[0] * std::pow(2.0, e), x[1] * std::pow(2.0, e), x[2] * std::pow(2.0, e)};  // 1. exposure
  v[0] *= std::exp(t);                                                                       // 2. white balance
  v[2] *= std::exp(-t);
  v[1] *= std::exp(g);
  for (double& ch : v) ch = 0.5 + (ch - 0.5) * std::exp(c);  // 3. contrast
  const double L = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
  for (double& ch : v) ch = L + (ch - L) * std::exp(s);  // 4. saturation
  for (double& ch : v) ch = std::clamp(ch, 0.0, 1.0);    // 5. clamp
  // 6. tone curve through the knots (u_i, q_i).
  std::vector<double> q(static_cast<std::size_t>(K + 2));
  for (int i = 0; i <= K + 1; ++i) q[static_cast<std::size_t>(i)] = static_cast<double>(i) / (K + 1);
  for (int i = 1; i <= K; ++i) {
    q[static_cast<std::size_t>(i)] += std::tanh(theta[static_cast<std::size_t>(ops::kPhotoEditFixed + i - 1)]) /
                                      (2.0 * (K + 1));
  }
  for (int ch = 0; ch < 3; ++ch) {
    const double w = v[ch] * (K + 1);
    const int j = std::min(static_cast<int>(std::floor(w)), K);
    const double q0 = q[static_cast<std::size_t>(j)], q1 = q[static_cast<std::size_t>(j + 1)];
    y[ch] = q0 + (q1 - q0) * (w - j);
  }
}

std::vector<double> reference_forward(const std::vector<double>& x, const std::vector<double>& theta, int K) {
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i + 2 < x.size(); i += 3) reference_pixel(&x[i], theta, K, &y[i]);
  return y;
}

double reference_objective(const std::vector<double>& x, const std::vector<double>& theta, int K,
                           const std::vector<double>& dy) {
  const std::vector<double> y = reference_forward(x, theta, K);
  double total = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) total += dy[i] * y[i];
  return total;
}

// Central differences of sum(dy * y_ref) in double; h small enough that a pixel rarely crosses a
// clamp or knot kink between theta - h and theta + h.
std::vector<double> reference_gradient(const std::vector<double>& x, std::vector<double> theta, int K,
                                       const std::vector<double>& dy, double h = 1e-6) {
  std::vector<double> grad(theta.size());
  for (std::size_t q = 0; q < theta.size(); ++q) {
    const double keep = theta[q];
    theta[q] = keep + h;
    const double plus = reference_objective(x, theta, K, dy);
    theta[q] = keep - h;
    const double minus = reference_objective(x, theta, K, dy);
    theta[q] = keep;
    grad[q] = (plus - minus) / (2 * h);
  }
  return grad;
}

// ---------------------------------------------------------------- helpers

Tensor theta_tensor(const std::vector<float>& values) {
  return Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
}

std::vector<float> random_theta(int K, uint64_t seed, float scale) {
  const Tensor t = test::random_tensor({ops::kPhotoEditFixed + K}, seed, -scale, scale);
  return t.to_vector();
}

std::vector<double> as_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Max |a - b| over elements.
double max_abs_diff(const Tensor& got, const std::vector<double>& ref) {
  const std::vector<float> g = got.to_vector();
  REQUIRE(g.size() == ref.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::fabs(g[i] - ref[i]));
  return worst;
}

double luma(const float* p) { return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]; }

// One edited copy of x with only theta[index] set (K = 4).
Tensor edit_one(const Tensor& x, int index, float value) {
  std::vector<float> theta(static_cast<std::size_t>(PhotoEditParams{}.theta_size()), 0.0f);
  theta[static_cast<std::size_t>(index)] = value;
  return ops::photo_edit_forward(PhotoEditParams{}, x, theta_tensor(theta));
}

struct Case {
  Shape x;
  int knots;
};

// 1x1, odd sizes, N = 1..3, a single [H,W,3] image, an empty batch, no tone curve, one knot, the
// largest K, and images large enough to be split across threads.
const Case kCases[] = {
    {{1, 1, 1, 3}, 4},  {{1, 3, 5, 3}, 4},  {{2, 7, 1, 3}, 1},   {{3, 13, 11, 3}, 4}, {{5, 4, 3}, 0},
    {{2, 17, 9, 3}, 7}, {{1, 1, 1, 3}, 16}, {{0, 4, 4, 3}, 4},   {{1, 64, 65, 3}, 4}, {{3, 5, 3, 3}, 16},
    {{2, 41, 47, 3}, 3},
};

std::string describe(const Case& c) { return shape_str(c.x) + " K=" + std::to_string(c.knots); }

}  // namespace

TEST_CASE("photo_edit_forward matches a double-precision loop on awkward shapes") {
  uint64_t seed = 1;
  double worst = 0.0;
  for (const Case& c : kCases) {
    const PhotoEditParams p{c.knots};
    const Tensor x = test::random_tensor(c.x, seed++, 0.0f, 1.0f);
    // Mild edits, strong edits (clamping on both ends), and one parameter at a time.
    for (const float scale : {0.3f, 1.5f}) {
      const std::vector<float> theta = random_theta(c.knots, seed++, scale);
      const Tensor y = ops::photo_edit_forward(p, x, theta_tensor(theta));
      REQUIRE(y.shape() == c.x);
      REQUIRE(y.dtype() == DType::f32);
      const std::vector<double> ref = reference_forward(test::to_double(x), as_double(theta), c.knots);
      AE_REQUIRE_OK(test::compare(y, ref, test::Tolerance{2e-6, 0.0, 1e-11},
                                  "photo_edit_forward " + describe(c) + " scale " + std::to_string(scale)));
      worst = std::max(worst, max_abs_diff(y, ref));
      const std::vector<float> yv = y.to_vector();
      CHECK(std::all_of(yv.begin(), yv.end(), [](float v) { return v >= 0.0f && v <= 1.0f; }));
    }
  }
  std::printf("photo_edit_forward vs double loop: max |error| %.3g\n", worst);
}

TEST_CASE("photo_edit_forward with theta = 0 is the identity bit for bit") {
  // Exact 0 and 1, subnormals, values where x - 0.5 would round, and random values.
  std::vector<float> values = {0.0f, 1.0f, 0.5f, 0.25f, 1e-30f, std::numeric_limits<float>::denorm_min(),
                               std::nextafter(1.0f, 0.0f), std::nextafter(0.5f, 0.0f), 0.1f, 1.0f / 3.0f,
                               0.2f, 0.8f, 0.75f, 1e-7f, 0.999f};
  const std::vector<float> random = test::random_tensor({3 * 13 * 11 * 3}, 5, 0.0f, 1.0f).to_vector();
  values.insert(values.end(), random.begin(), random.end());
  while (values.size() % 3 != 0) values.push_back(0.5f);
  const int64_t pixels = static_cast<int64_t>(values.size()) / 3;
  for (const int K : {0, 1, 4, 16}) {
    const PhotoEditParams p{K};
    const Tensor zero = Tensor::zeros({p.theta_size()});
    for (const Shape& s : {Shape{1, 1, pixels, 3}, Shape{pixels, 1, 3}}) {
      const Tensor x = Tensor::from_vector(s, values);
      INFO("K=" << K << " x " << shape_str(s));
      CHECK(test::bitwise_equal(ops::photo_edit_forward(p, x, zero), x));
    }
  }
  // u8: the identity of x / 255.0f.
  Tensor u8 = Tensor::empty({2, 16, 8, 3}, DType::u8);
  Tensor as_float = Tensor::empty(u8.shape());
  for (int64_t i = 0; i < u8.numel(); ++i) {
    u8.data<uint8_t>()[i] = static_cast<uint8_t>(i % 256);
    as_float.f32()[i] = static_cast<float>(i % 256) / 255.0f;
  }
  CHECK(test::bitwise_equal(ops::photo_edit_forward(PhotoEditParams{}, u8, Tensor::zeros({9})), as_float));
}

TEST_CASE("photo_edit_forward on u8 equals the op on x / 255 (forward and dtheta), bit for bit") {
  Tensor u8 = Tensor::empty({2, 9, 7, 3}, DType::u8);
  Tensor as_float = Tensor::empty(u8.shape());
  for (int64_t i = 0; i < u8.numel(); ++i) {
    const auto v = static_cast<uint8_t>((i * 53 + 11) % 256);
    u8.data<uint8_t>()[i] = v;
    as_float.f32()[i] = static_cast<float>(v) / 255.0f;
  }
  const PhotoEditParams p{5};
  const Tensor theta = theta_tensor(random_theta(5, 77, 0.6f));
  CHECK(test::bitwise_equal(ops::photo_edit_forward(p, u8, theta), ops::photo_edit_forward(p, as_float, theta)));
  const Tensor dy = test::random_tensor(u8.shape(), 78);
  CHECK(test::bitwise_equal(ops::photo_edit_backward_theta(p, u8, theta, dy),
                            ops::photo_edit_backward_theta(p, as_float, theta, dy)));
}

TEST_CASE("each photo-edit parameter moves the image the documented way") {
  // Mid-range colours: no channel starts at a clamp.
  const Tensor x = test::random_tensor({1, 9, 11, 3}, 21, 0.2f, 0.8f);
  const float* xp = x.f32();
  const int64_t pixels = x.numel() / 3;

  SUBCASE("exposure > 0 brightens every channel, < 0 darkens") {
    const Tensor up = edit_one(x, PhotoEditParams::kExposure, 0.5f), down = edit_one(x, PhotoEditParams::kExposure, -0.5f);
    for (int64_t i = 0; i < x.numel(); ++i) {
      CHECK(up.f32()[i] > xp[i]);
      CHECK(down.f32()[i] < xp[i]);
    }
  }
  SUBCASE("temperature > 0 raises R - B (R up, B down), < 0 lowers it; G unchanged") {
    const Tensor warm = edit_one(x, PhotoEditParams::kTemperature, 0.3f);
    const Tensor cool = edit_one(x, PhotoEditParams::kTemperature, -0.3f);
    for (int64_t i = 0; i < pixels; ++i) {
      const float* a = xp + 3 * i;
      const float *w = warm.f32() + 3 * i, *k = cool.f32() + 3 * i;
      CHECK(w[0] > a[0]);
      CHECK(w[2] < a[2]);
      CHECK(w[0] - w[2] > a[0] - a[2]);
      CHECK(k[0] - k[2] < a[0] - a[2]);
      CHECK(w[1] == a[1]);
    }
  }
  SUBCASE("tint > 0 raises G against R and B, < 0 lowers it") {
    const Tensor green = edit_one(x, PhotoEditParams::kTint, 0.3f), magenta = edit_one(x, PhotoEditParams::kTint, -0.3f);
    for (int64_t i = 0; i < pixels; ++i) {
      CHECK(green.f32()[3 * i + 1] > xp[3 * i + 1]);
      CHECK(magenta.f32()[3 * i + 1] < xp[3 * i + 1]);
      CHECK(green.f32()[3 * i] == xp[3 * i]);
      CHECK(green.f32()[3 * i + 2] == xp[3 * i + 2]);
    }
  }
  SUBCASE("contrast > 0 pushes values away from 0.5, < 0 pulls them toward it") {
    const Tensor more = edit_one(x, PhotoEditParams::kContrast, 0.4f), less = edit_one(x, PhotoEditParams::kContrast, -0.4f);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float d = std::fabs(xp[i] - 0.5f);
      if (d < 1e-3f) continue;
      CHECK(std::fabs(more.f32()[i] - 0.5f) > d);
      CHECK(std::fabs(less.f32()[i] - 0.5f) < d);
    }
  }
  SUBCASE("saturation > 0 raises chroma, < 0 lowers it, luma is kept while nothing clamps") {
    const Tensor more = edit_one(x, PhotoEditParams::kSaturation, 0.4f);
    const Tensor less = edit_one(x, PhotoEditParams::kSaturation, -0.5f);
    const auto chroma = [](const float* p) { return std::max({p[0], p[1], p[2]}) - std::min({p[0], p[1], p[2]}); };
    for (int64_t i = 0; i < pixels; ++i) {
      const float* a = xp + 3 * i;
      if (chroma(a) < 1e-3f) continue;
      CHECK(chroma(more.f32() + 3 * i) > chroma(a));
      CHECK(chroma(less.f32() + 3 * i) < chroma(a));
      CHECK(std::fabs(luma(less.f32() + 3 * i) - luma(a)) < 1e-6);  // moving toward L never clamps
    }
  }
  SUBCASE("a positive tone knot raises the curve around its knot, a negative one lowers it") {
    // Gray ramp through K = 4 knots at u = 0.2 .. 0.8; only knot 2 (u = 0.4) moves.
    std::vector<float> ramp;
    for (int i = 0; i <= 100; ++i) ramp.insert(ramp.end(), 3, static_cast<float>(i) / 100.0f);
    const Tensor gray = Tensor::from_vector({1, 1, 101, 3}, ramp);
    const Tensor up = edit_one(gray, ops::kPhotoEditFixed + 1, 1.0f), down = edit_one(gray, ops::kPhotoEditFixed + 1, -1.0f);
    for (int i = 0; i <= 100; ++i) {
      const float u = ramp[static_cast<std::size_t>(3 * i)];
      INFO("u = " << u);
      if (u > 0.2f + 1e-6f && u < 0.6f - 1e-6f) {  // the knot's two segments
        CHECK(up.f32()[3 * i] > u);
        CHECK(down.f32()[3 * i] < u);
      } else {
        CHECK(up.f32()[3 * i] == doctest::Approx(u).epsilon(1e-6));
      }
    }
  }
}

TEST_CASE("the tone curve is monotone, maps 0 to 0 and 1 to 1, for random theta") {
  // A fine gray ramp (no colour step changes it: theta's fixed part is 0) with its endpoints.
  std::vector<float> ramp;
  const int steps = 2000;
  for (int i = 0; i <= steps; ++i) ramp.insert(ramp.end(), 3, static_cast<float>(i) / steps);
  const Tensor gray = Tensor::from_vector({1, 1, steps + 1, 3}, ramp);
  uint64_t seed = 300;
  for (const int K : {1, 2, 4, 9, 16}) {
    for (int draw = 0; draw < 8; ++draw) {
      std::vector<float> theta(static_cast<std::size_t>(ops::kPhotoEditFixed + K), 0.0f);
      const std::vector<float> z = test::random_tensor({K}, seed++, -4.0f, 4.0f).to_vector();
      std::copy(z.begin(), z.end(), theta.begin() + ops::kPhotoEditFixed);
      const std::vector<float> y = ops::photo_edit_forward(PhotoEditParams{K}, gray, theta_tensor(theta)).to_vector();
      INFO("K=" << K << " draw " << draw);
      CHECK(y.front() == 0.0f);
      CHECK(y.back() == 1.0f);
      bool monotone = true;
      for (int i = 1; i <= steps; ++i) monotone = monotone && y[static_cast<std::size_t>(3 * i)] > y[static_cast<std::size_t>(3 * (i - 1))];
      CHECK(monotone);
    }
  }
}

TEST_CASE("photo_edit_backward_theta matches central finite differences of sum(dy*y) in double") {
  struct GradCase {
    Case c;
    float x_lo, x_hi, theta_scale;
  };
  // Mid-range x with small theta (no clamp active), then x over [0,1] with strong edits (the clamp
  // passes no gradient where it is active; h is small enough not to straddle it).
  const GradCase cases[] = {
      {{{1, 1, 1, 3}, 4}, 0.2f, 0.8f, 0.15f},  {{{2, 5, 3, 3}, 4}, 0.2f, 0.8f, 0.15f},
      {{{3, 9, 7, 3}, 0}, 0.2f, 0.8f, 0.15f},  {{{7, 5, 3}, 16}, 0.2f, 0.8f, 0.15f},
      {{{2, 41, 47, 3}, 4}, 0.2f, 0.8f, 0.15f}, {{{1, 13, 11, 3}, 3}, 0.0f, 1.0f, 0.8f},
      {{{2, 17, 19, 3}, 6}, 0.0f, 1.0f, 1.2f},
  };
  uint64_t seed = 500;
  double worst_rel = 0.0;
  for (const GradCase& g : cases) {
    const PhotoEditParams p{g.c.knots};
    const Tensor x = test::random_tensor(g.c.x, seed++, g.x_lo, g.x_hi);
    const Tensor dy = test::random_tensor(g.c.x, seed++);
    const std::vector<float> theta = random_theta(g.c.knots, seed++, g.theta_scale);
    const Tensor dtheta = ops::photo_edit_backward_theta(p, x, theta_tensor(theta), dy);
    REQUIRE(dtheta.shape() == Shape{p.theta_size()});
    const std::vector<double> xd = test::to_double(x), dyd = test::to_double(dy);
    const std::vector<double> numeric = reference_gradient(xd, as_double(theta), g.c.knots, dyd);
    // Scale of a derivative: sum |dy| (every parameter moves each output by O(1) per unit).
    double scale = 1.0;
    for (const double v : dyd) scale += std::fabs(v);
    const std::vector<float> got = dtheta.to_vector();
    for (std::size_t q = 0; q < got.size(); ++q) {
      const double err = std::fabs(got[q] - numeric[q]) / scale;
      worst_rel = std::max(worst_rel, err);
      INFO(describe(g.c) << " theta[" << q << "]: op " << got[q] << ", finite differences " << numeric[q]);
      CHECK(err <= 2e-6);
    }
  }
  std::printf("photo_edit_backward_theta vs double finite differences: max |error| / sum|dy| %.3g\n", worst_rel);
}

TEST_CASE("photo_edit_backward_theta agrees with finite differences of the float op") {
  const PhotoEditParams p{4};
  const Tensor x = test::random_tensor({2, 23, 19, 3}, 900, 0.2f, 0.8f);
  const Tensor dy = test::random_tensor(x.shape(), 901);
  Tensor theta = theta_tensor(random_theta(4, 902, 0.1f));
  const std::vector<float> got = ops::photo_edit_backward_theta(p, x, theta, dy).to_vector();
  const std::vector<double> numeric =
      test::numeric_gradient(theta, [&] { return test::weighted_sum(ops::photo_edit_forward(p, x, theta), dy); }, 1e-2);
  double scale = 1.0;
  for (const double v : test::to_double(dy)) scale += std::fabs(v);
  for (std::size_t q = 0; q < got.size(); ++q) {
    INFO("theta[" << q << "]: op " << got[q] << ", float finite differences " << numeric[q]);
    CHECK(std::fabs(got[q] - numeric[q]) <= 2e-4 * scale);
  }
}

TEST_CASE("photo_edit_backward_theta is the same bits for any thread count and on repeat") {
  const PhotoEditParams p{5};
  const Tensor x = test::random_tensor({2, 64, 70, 3}, 31, 0.0f, 1.0f);
  const Tensor dy = test::random_tensor(x.shape(), 32);
  const Tensor theta = theta_tensor(random_theta(5, 33, 0.5f));
  const int threads = thread_count();
  const Tensor first = ops::photo_edit_backward_theta(p, x, theta, dy);
  const Tensor forward = ops::photo_edit_forward(p, x, theta);
  for (const int t : {1, 2, 3, 7}) {
    set_thread_count(t);
    INFO(t << " threads");
    CHECK(test::bitwise_equal(ops::photo_edit_backward_theta(p, x, theta, dy), first));
    CHECK(test::bitwise_equal(ops::photo_edit_forward(p, x, theta), forward));
  }
  set_thread_count(threads);
}

TEST_CASE("photo edits reject bad arguments with a message naming the op and the problem") {
  const PhotoEditParams p;  // K = 4: theta [9]
  const Tensor x = Tensor::zeros({1, 4, 4, 3}), theta = Tensor::zeros({9}), dy = Tensor::zeros({1, 4, 4, 3});
  const char* fwd = "photo_edit_forward";
  const char* bwd = "photo_edit_backward_theta";
  test::require_error([&] { ops::photo_edit_forward(p, Tensor(), theta); }, {fwd, "x is undefined"});
  test::require_error([&] { ops::photo_edit_forward(p, Tensor::zeros({4, 4}), theta); }, {fwd, "[4,4]", "[N,H,W,3]"});
  test::require_error([&] { ops::photo_edit_forward(p, Tensor::zeros({1, 4, 4, 4}), theta); }, {fwd, "RGB image"});
  test::require_error([&] { ops::photo_edit_forward(p, Tensor::zeros({2, 1, 4, 4, 3}), theta); }, {fwd, "RGB image"});
  test::require_error([&] { ops::photo_edit_forward(p, Tensor::zeros({1, 4, 4, 3}, DType::i64), theta); },
                      {fwd, "i64", "f32 (RGB in [0,1]) or u8"});
  test::require_error([&] { ops::photo_edit_forward(p, x, Tensor()); }, {fwd, "theta is undefined"});
  test::require_error([&] { ops::photo_edit_forward(p, x, Tensor::zeros({8})); },
                      {fwd, "theta [8]", "must be [9]", "tone_knots = 4"});
  test::require_error([&] { ops::photo_edit_forward(p, x, Tensor::zeros({1, 9})); }, {fwd, "theta [1,9]", "must be [9]"});
  test::require_error([&] { ops::photo_edit_forward(p, x, Tensor::zeros({9}, DType::u8)); }, {fwd, "theta", "must be f32"});
  test::require_error([&] { ops::photo_edit_forward(PhotoEditParams{-1}, x, Tensor::zeros({4})); },
                      {fwd, "tone_knots is -1", "0..16"});
  test::require_error([&] { ops::photo_edit_forward(PhotoEditParams{17}, x, Tensor::zeros({22})); },
                      {fwd, "tone_knots is 17", "0..16"});
  test::require_error([&] { ops::photo_edit_backward_theta(p, x, Tensor::zeros({10}), dy); }, {bwd, "must be [9]"});
  test::require_error([&] { ops::photo_edit_backward_theta(p, x, theta, Tensor::zeros({1, 4, 5, 3})); },
                      {bwd, "dy has shape [1,4,5,3]", "expected [1,4,4,3]"});
  test::require_error([&] { ops::photo_edit_backward_theta(p, x, theta, Tensor::zeros({1, 4, 4, 3}, DType::u8)); },
                      {bwd, "dy", "must be f32"});
  test::require_error([&] { ops::photo_edit_backward_theta(p, x, theta, Tensor()); }, {bwd, "dy is undefined"});
  test::require_error([&] { ops::photo_edit_backward_theta(p, Tensor::zeros({4, 4, 2}), theta, dy); }, {bwd, "RGB image"});
}

// The one preprocessing definition (DESIGN.md, "Input gradients"): the differentiable
// img::preprocess_eval_ops (ops::resize_bilinear_forward + ops::normalize_image) against the
// scoring path img::preprocess_eval, bit for bit on the CPU, on generated images of odd sizes
// (enlarging, shrinking by more than 2x, one axis only, identity, native size) and on the real
// photos Debian ships (as tests/unit/test_image_photos.cpp finds them); its backward against
// central finite differences in double and the adjoint identity <A x, y> = <x, A^T y>; the
// resample plans of kernels/resize_taps.h (the only place resize weights are computed) against
// each other. If the photos cannot be fetched, the photo case marks the binary SKIPPED (exit 77,
// after every other check has run and passed), never passed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "kernels/resize_taps.h"
#include "runtime/error.h"
#include "tests/support/check.h"
#include "tests/support/files.h"
#include "tests/support/expect.h"
#include "train/image.h"
#include "train/preprocess.h"

using namespace ae;
using ae::test::bitwise_equal;
using ae::test::require_error;

namespace {

img::Image test_image(int h, int w, uint64_t seed) {
  img::Image im;
  im.height = h;
  im.width = w;
  im.rgb.resize(static_cast<std::size_t>(h) * w * 3);
  for (std::size_t i = 0; i < im.rgb.size(); ++i) {
    im.rgb[i] = static_cast<uint8_t>((i * 53 + (i / 7) * 31 + seed * 11) % 256);
  }
  return im;
}

// preprocess_eval_ops on the image's to_float copy, as [H,W,3] and as [1,H,W,3]; both must equal
// preprocess_eval bit for bit.
void require_same_as_preprocess_eval(const img::Image& im, int size, const std::string& what) {
  const Tensor expected = img::preprocess_eval(im, size);
  const Tensor x = img::to_tensor(img::to_float(im));
  const Tensor got3 = img::preprocess_eval_ops(x, size);
  const Tensor got4 = img::preprocess_eval_ops(x.reshape({1, im.height, im.width, 3}), size);
  INFO(what << " " << im.height << "x" << im.width << " at size " << size << ": expected " << expected.desc()
            << ", got " << got3.desc());
  REQUIRE(bitwise_equal(got3, expected));
  REQUIRE(bitwise_equal(got4, expected));
}

// ---- an independent double-precision model of preprocess_eval ----
// PyTorch's bilinear formula with every weight kept in double (not kernels/resize_taps.h), then
// (x - mean) / std in double. x is [N,H,W,3] flattened; returns [N,OH,OW,3] flattened.
struct Dims {
  int64_t n, h, w, oh, ow;
};

void tap(int64_t in, int64_t out, int64_t o, int64_t& i0, int64_t& i1, double& l1) {
  const double scale = static_cast<double>(static_cast<float>(in) / static_cast<float>(out));
  const double src = std::max(scale * (static_cast<double>(o) + 0.5) - 0.5, 0.0);
  i0 = std::min(static_cast<int64_t>(src), in - 1);
  i1 = std::min(i0 + 1, in - 1);
  l1 = std::clamp(src - static_cast<double>(i0), 0.0, 1.0);
}

std::vector<double> reference_preprocess(const std::vector<double>& x, const Dims& d) {
  std::vector<double> y(static_cast<std::size_t>(d.n * d.oh * d.ow * 3));
  for (int64_t b = 0; b < d.n; ++b)
    for (int64_t oy = 0; oy < d.oh; ++oy)
      for (int64_t ox = 0; ox < d.ow; ++ox) {
        int64_t y0 = oy, y1 = oy, x0 = ox, x1 = ox;
        double ly = 0, lx = 0;
        if (d.oh != d.h) tap(d.h, d.oh, oy, y0, y1, ly);  // an unchanged axis is the identity
        if (d.ow != d.w) tap(d.w, d.ow, ox, x0, x1, lx);
        for (int64_t c = 0; c < 3; ++c) {
          const auto at = [&](int64_t yy, int64_t xx) {
            return x[static_cast<std::size_t>(((b * d.h + yy) * d.w + xx) * 3 + c)];
          };
          const double v =
              (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
          const double mean = static_cast<double>(img::kImagenetMean[c]), sd = static_cast<double>(img::kImagenetStd[c]);
          y[static_cast<std::size_t>(((b * d.oh + oy) * d.ow + ox) * 3 + c)] = (v - mean) / sd;
        }
      }
  return y;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

const std::string& photos_dir() { return ae::test::test_photos_dir(); }

const char* const kPhotos[] = {"astronaut.png", "chelsea.png",   "coffee.png",  "camera.png",
                               "logo.png",      "green_palette.png", "rocket.jpg", "hubble_deep_field.jpg",
                               "grace_hopper.jpg", "china.jpg",  "flower.jpg"};

}  // namespace

TEST_CASE("the resample plans: one bilinear definition for the ops and preprocess.cpp") {
  for (int64_t in : {1, 2, 3, 5, 7, 17, 224, 300, 375, 1000, 4032}) {
    for (int64_t out : {1, 2, 3, 4, 13, 100, 224, 256, 299, 512, 2000}) {
      CAPTURE(in);
      CAPTURE(out);
      const ops::BilinearAxis axis = ops::bilinear_axis(in, out);
      const ops::ResampleAxis plan = ops::resample_axis(in, out, ops::ResizeFilter::bilinear);
      REQUIRE(plan.outputs() == out);
      REQUIRE(axis.taps.size() == static_cast<std::size_t>(out));
      for (int64_t o = 0; o < out; ++o) {
        const ops::BilinearTap& t = axis.taps[static_cast<std::size_t>(o)];
        const int32_t k = plan.start[static_cast<std::size_t>(o)];
        REQUIRE(plan.taps(o) == 2);
        REQUIRE(plan.index[static_cast<std::size_t>(k)] == t.i0);
        REQUIRE(plan.index[static_cast<std::size_t>(k) + 1] == t.i1);
        REQUIRE(std::memcmp(&plan.weight[static_cast<std::size_t>(k)], &t.w0, sizeof(float)) == 0);
        REQUIRE(std::memcmp(&plan.weight[static_cast<std::size_t>(k) + 1], &t.w1, sizeof(float)) == 0);
        // The weights are PyTorch's: w1 = float(frac(src)) from a double src, w0 = 1 - w1.
        int64_t i0, i1;
        double l1;
        tap(in, out, o, i0, i1, l1);
        REQUIRE(t.i0 == i0);
        REQUIRE(t.i1 == i1);
        REQUIRE(t.w1 == static_cast<float>(l1));
        REQUIRE(t.w0 == 1.0f - static_cast<float>(l1));
      }
      // Antialias: a partition of unity over in-range indices, one contiguous run per output.
      const ops::ResampleAxis aa = ops::resample_axis(in, out, ops::ResizeFilter::antialias);
      REQUIRE(aa.outputs() == out);
      for (int64_t o = 0; o < out; ++o) {
        double sum = 0;
        for (int32_t k = aa.start[static_cast<std::size_t>(o)]; k < aa.start[static_cast<std::size_t>(o) + 1]; ++k) {
          const int32_t i = aa.index[static_cast<std::size_t>(k)];
          REQUIRE(i >= 0);
          REQUIRE(i < in);
          if (k > aa.start[static_cast<std::size_t>(o)]) REQUIRE(i == aa.index[static_cast<std::size_t>(k) - 1] + 1);
          sum += aa.weight[static_cast<std::size_t>(k)];
        }
        REQUIRE(sum == doctest::Approx(1.0).epsilon(1e-5));
      }
    }
  }
}

TEST_CASE("preprocess_eval_ops equals preprocess_eval bit for bit on generated images") {
  // Odd sizes: single pixels, one row, enlarging, shrinking by more than 2x (pixels read by no
  // output), one axis unchanged, a square at its own size (identity resize), native size.
  const std::pair<int, int> images[] = {{1, 1}, {2, 3}, {1, 9}, {5, 7}, {13, 4}, {16, 16},
                                        {37, 53}, {224, 224}, {97, 300}, {256, 300}, {481, 17}};
  const int sizes[] = {-1, 0, 1, 3, 7, 16, 64, 224, 256};
  uint64_t seed = 1;
  for (const auto& [h, w] : images) {
    const img::Image im = test_image(h, w, seed++);
    for (const int size : sizes) require_same_as_preprocess_eval(im, size, "generated");
  }
}

TEST_CASE("preprocess_eval_ops equals preprocess_eval bit for bit on real photos") {
  if (photos_dir().empty()) {
    ae::test::skip_binary("sample photos could not be fetched with scripts/fetch_test_photos.sh");
    return;
  }
  for (const char* name : kPhotos) {
    const img::Image im = img::read_image(photos_dir() + "/" + name);
    for (const int size : {224, 256, 299, 31, 512, 0}) require_same_as_preprocess_eval(im, size, name);
  }
}

TEST_CASE("preprocess_eval_ops on a batch preprocesses each image alone, on its device, leaving the input alone") {
  const img::Image a = test_image(23, 41, 5), b = test_image(23, 41, 6);
  const Tensor ta = img::to_tensor(img::to_float(a)), tb = img::to_tensor(img::to_float(b));
  Tensor batch = Tensor::empty({2, 23, 41, 3});
  std::memcpy(batch.f32(), ta.f32(), ta.nbytes());
  std::memcpy(batch.f32() + ta.numel(), tb.f32(), tb.nbytes());
  const Tensor before = batch.clone();
  const Tensor y = img::preprocess_eval_ops(batch, 32);
  REQUIRE(y.shape() == Shape{2, 32, 32, 3});
  CHECK(y.device() == batch.device());
  CHECK(bitwise_equal(y.rows(0, 1), img::preprocess_eval(a, 32)));
  CHECK(bitwise_equal(y.rows(1, 2), img::preprocess_eval(b, 32)));
  CHECK(bitwise_equal(batch, before));  // the input is not modified
  // Native size: a new tensor, never a view of the input.
  const Tensor same = img::preprocess_eval_ops(batch, 0);
  CHECK(same.storage() != batch.storage());
}

TEST_CASE("preprocess_eval_ops_backward matches central finite differences in double") {
  struct Case {
    Shape image;
    int size;
  };
  // Enlarging, shrinking by more than 2x, one pixel, a wide strip, identity, native size, a batch.
  const Case cases[] = {{{5, 7, 3}, 16},   {{1, 23, 17, 3}, 5}, {{1, 1, 3}, 4},     {{2, 29, 3}, 6},
                        {{6, 6, 3}, 6},    {{4, 9, 3}, 0},      {{2, 7, 5, 3}, 11}, {{1, 40, 9, 3}, 3}};
  uint64_t seed = 100;
  for (const Case& c : cases) {
    const Shape s4 = c.image.size() == 4 ? c.image : Shape{1, c.image[0], c.image[1], c.image[2]};
    const int64_t oh = c.size > 0 ? c.size : s4[1], ow = c.size > 0 ? c.size : s4[2];
    const Dims d{s4[0], s4[1], s4[2], oh, ow};
    const std::string what = "preprocess_eval_ops " + shape_str(c.image) + " at size " + std::to_string(c.size);
    INFO(what);
    Tensor x = test::random_tensor(c.image, seed++, 0.0f, 1.0f);
    const Tensor g = test::random_tensor({d.n, oh, ow, 3}, seed++);

    // The forward agrees with the double model (float rounding only).
    const Tensor y = img::preprocess_eval_ops(x, c.size);
    REQUIRE(y.shape() == Shape{d.n, oh, ow, 3});
    AE_REQUIRE_OK(test::compare(y, reference_preprocess(test::to_double(x), d), test::Tolerance{2e-6, 2e-6, 1e-12},
                                what + " forward"));

    const Tensor dx = img::preprocess_eval_ops_backward(g, c.image, c.size);
    REQUIRE(dx.shape() == c.image);
    CHECK(dx.device() == g.device());

    // Central differences of <P(x), g> with P the double model: exact for this affine map up to
    // double rounding, so the float backward must agree to float precision.
    const std::vector<double> gd = test::to_double(g);
    std::vector<double> xd = test::to_double(x);
    std::vector<double> numeric(xd.size());
    const double eps = 1e-3;
    for (std::size_t i = 0; i < xd.size(); ++i) {
      const double orig = xd[i];
      xd[i] = orig + eps;
      const double fp = dot(reference_preprocess(xd, d), gd);
      xd[i] = orig - eps;
      const double fm = dot(reference_preprocess(xd, d), gd);
      xd[i] = orig;
      numeric[i] = (fp - fm) / (2 * eps);
    }
    AE_REQUIRE_OK(test::compare(dx, numeric, test::Tolerance{2e-5, 2e-6, 1e-12}, what + " dx vs double differences"));

    // And central differences of the float forward itself (loose: the forward rounds to float).
    const std::vector<double> numeric_float =
        test::numeric_gradient(x, [&] { return test::weighted_sum(img::preprocess_eval_ops(x, c.size), g); }, 0.125);
    AE_REQUIRE_OK(test::compare(dx, numeric_float, test::Tolerance{1e-4, 1e-5, 1e-10}, what + " dx vs float differences"));
  }
}

TEST_CASE("preprocess_eval_ops_backward is the adjoint: <A x, y> = <x, A^T y>") {
  // A is the linear part of the affine preprocessing: A x = P(x) - P(0).
  struct Case {
    Shape image;
    int size;
  };
  const Case cases[] = {{{37, 53, 3}, 224}, {{300, 97, 3}, 64}, {{2, 19, 31, 3}, 24},
                        {{64, 64, 3}, 64},  {{9, 130, 3}, 0},   {{451, 300, 3}, 224}};
  uint64_t seed = 300;
  for (const Case& c : cases) {
    const std::string what = "adjoint " + shape_str(c.image) + " at size " + std::to_string(c.size);
    INFO(what);
    const Tensor x = test::random_tensor(c.image, seed++, 0.0f, 1.0f);
    const Tensor p0 = img::preprocess_eval_ops(Tensor::zeros(c.image), c.size);
    const std::vector<double> ax = minus(test::to_double(img::preprocess_eval_ops(x, c.size)), test::to_double(p0));
    const Tensor yv = test::random_tensor(p0.shape(), seed++);
    const std::vector<double> aty = test::to_double(img::preprocess_eval_ops_backward(yv, c.image, c.size));
    const std::vector<double> xd = test::to_double(x), yd = test::to_double(yv);
    const double lhs = dot(ax, yd), rhs = dot(xd, aty);
    // The two sides differ by float rounding of A x and A^T y only: a random walk of about
    // sqrt(terms) float ulps, far below 1e-7 of the Cauchy-Schwarz scale below, while one wrong
    // weight of a single pixel moves a side by about one term, far above it.
    const double scale = std::sqrt(dot(ax, ax) * dot(yd, yd)) + std::sqrt(dot(xd, xd) * dot(aty, aty));
    MESSAGE(what << ": <Ax,y> = " << lhs << ", <x,A^T y> = " << rhs << ", scale " << scale);
    CHECK(std::fabs(lhs - rhs) <= 1e-7 * scale);
  }
}

TEST_CASE("preprocess_eval_ops and its backward reject bad arguments, naming the function") {
  require_error([] { img::preprocess_eval_ops(Tensor(), 224); }, {"preprocess_eval_ops", "undefined"});
  require_error([] { img::preprocess_eval_ops(Tensor::zeros({4, 4, 3}, DType::u8), 224); },
                {"preprocess_eval_ops", "f32"});
  require_error([] { img::preprocess_eval_ops(Tensor::zeros({4, 4, 4}), 224); }, {"preprocess_eval_ops", "[4,4,4]"});
  require_error([] { img::preprocess_eval_ops(Tensor::zeros({4, 4}), 224); }, {"preprocess_eval_ops", "[H,W,3]"});
  require_error([] { img::preprocess_eval_ops(Tensor::zeros({0, 4, 4, 3}), 224); }, {"preprocess_eval_ops"});
  require_error([] { img::preprocess_eval_ops(Tensor::zeros({4, 4, 3}), 1 << 20); },
                {"preprocess_eval_ops", "output size"});
  require_error([] { img::preprocess_eval_ops_backward(Tensor::zeros({1, 8, 8, 3}), Shape{4, 4, 3}, 7); },
                {"preprocess_eval_ops_backward", "[1,8,8,3]", "[1,7,7,3]"});
  require_error([] { img::preprocess_eval_ops_backward(Tensor::zeros({1, 4, 4, 3}, DType::u8), Shape{4, 4, 3}, 0); },
                {"preprocess_eval_ops_backward", "d_input"});
  require_error([] { img::preprocess_eval_ops_backward(Tensor::zeros({1, 4, 4, 3}), Shape{4, 4, 2}, 0); },
                {"preprocess_eval_ops_backward", "image_shape"});
  CHECK(img::preprocess_eval_ops_backward(Tensor::zeros({1, 4, 5, 3}), Shape{4, 5, 3}, 0).shape() == Shape{4, 5, 3});
}

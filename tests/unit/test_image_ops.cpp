// Image ops of kernels/ops.h on the CPU backend: normalize_image and resize_bilinear against
// naive double-precision loops, bit for bit against train/preprocess.cpp (the CPU definition
// already matched to PyTorch), backward passes against central finite differences and the
// adjoint identity <R x, g> = <x, R^T g>, and clear errors for bad arguments.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "train/image.h"
#include "train/preprocess.h"

using namespace ae;
using ae::test::bitwise_equal;
using ae::test::require_error;

namespace {

// Independent double-precision resize: PyTorch's formula with weights kept in double.
std::vector<double> resize_reference(const Tensor& x, int64_t oh, int64_t ow) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const std::vector<double> xv = test::to_double(x);
  const auto tap = [](int64_t in, int64_t out, int64_t o, int64_t& i0, int64_t& i1, double& l1) {
    const double scale = static_cast<double>(static_cast<float>(in) / static_cast<float>(out));
    const double src = std::max(scale * (static_cast<double>(o) + 0.5) - 0.5, 0.0);
    i0 = std::min(static_cast<int64_t>(src), in - 1);
    i1 = std::min(i0 + 1, in - 1);
    l1 = std::clamp(src - static_cast<double>(i0), 0.0, 1.0);
  };
  std::vector<double> y(static_cast<std::size_t>(n * oh * ow * c));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        int64_t y0, y1, x0, x1;
        double ly, lx;
        tap(h, oh, oy, y0, y1, ly);
        tap(w, ow, ox, x0, x1, lx);
        for (int64_t j = 0; j < c; ++j) {
          const auto at = [&](int64_t yy, int64_t xx) { return xv[static_cast<std::size_t>(((b * h + yy) * w + xx) * c + j)]; };
          y[static_cast<std::size_t>(((b * oh + oy) * ow + ox) * c + j)] =
              (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
        }
      }
  return y;
}

double dot(const Tensor& a, const Tensor& b) { return test::weighted_sum(a, b); }

img::Image test_image(int h, int w, uint64_t seed) {
  img::Image im;
  im.height = h;
  im.width = w;
  im.rgb.resize(static_cast<std::size_t>(h) * w * 3);
  for (std::size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = static_cast<uint8_t>((i * 53 + seed * 11) % 256);
  return im;
}

Tensor image_tensor(const img::Image& im) {
  Tensor t = Tensor::empty({im.height, im.width, 3}, DType::u8);
  std::memcpy(t.raw(), im.rgb.data(), im.rgb.size());
  return t;
}

Tensor imagef_tensor(const img::ImageF& im) {
  return Tensor::from_vector({1, im.height, im.width, 3}, im.rgb);
}

const test::Tolerance kResizeTol{1e-6, 1e-5, 1e-12};

}  // namespace

TEST_CASE("normalize_image: u8 and f32 HWC and NHWC equal preprocess.cpp bit for bit and a double loop") {
  const ops::NormalizeImageParams p;  // ImageNet mean and std
  for (const auto& [h, w] : {std::pair{1, 1}, std::pair{3, 5}, std::pair{17, 9}}) {
    const img::Image im = test_image(h, w, static_cast<uint64_t>(h * w));
    const Tensor expected = img::normalize_imagenet(img::to_float(im));
    const Tensor from_u8 = ops::normalize_image(p, image_tensor(im));
    CHECK(from_u8.shape() == Shape{1, h, w, 3});
    CHECK(bitwise_equal(from_u8, expected));
    const Tensor from_f32 = ops::normalize_image(p, imagef_tensor(img::to_float(im)));
    CHECK(bitwise_equal(from_f32, expected));

    std::vector<double> ref(im.rgb.size());
    for (std::size_t i = 0; i < ref.size(); ++i)
      ref[i] = (im.rgb[i] / 255.0 - p.mean[i % 3]) / p.std[i % 3];
    AE_REQUIRE_OK(test::compare(from_u8, ref, test::Tolerance{1e-6, 1e-6, 1e-12}, "normalize_image u8"));
  }
  // Other channel counts and a batch, with custom statistics.
  ops::NormalizeImageParams q;
  for (int c = 0; c < 4; ++c) {
    q.mean[c] = 0.1f * static_cast<float>(c) - 0.2f;
    q.std[c] = 0.5f + 0.25f * static_cast<float>(c);
  }
  for (const int64_t c : {1, 2, 4}) {
    const Tensor x = test::random_tensor({2, 3, 5, c}, 7 + static_cast<uint64_t>(c));
    const Tensor y = ops::normalize_image(q, x);
    std::vector<double> ref = test::to_double(x);
    for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = (ref[i] - q.mean[i % c]) / q.std[i % c];
    AE_REQUIRE_OK(test::compare(y, ref, test::Tolerance{1e-6, 1e-6, 1e-12}, "normalize_image C=" + std::to_string(c)));
  }
}

TEST_CASE("normalize_image_backward: dy/std, against finite differences, shape of x") {
  ops::NormalizeImageParams p;
  p.std[1] = 0.05f;  // a small std: a large derivative
  for (const Shape& s : {Shape{4, 3, 3}, Shape{2, 3, 2, 3}}) {
    Tensor x = test::random_tensor(s, 11);
    const Tensor g = test::random_tensor(s.size() == 3 ? Shape{1, s[0], s[1], s[2]} : s, 12);
    const Tensor dx = ops::normalize_image_backward(p, g, s);
    CHECK(dx.shape() == s);
    const std::vector<double> numeric =
        test::numeric_gradient(x, [&] { return dot(ops::normalize_image(p, x), g); }, 1e-2);
    AE_REQUIRE_OK(test::compare(dx, numeric, test::Tolerance{2e-3, 2e-3, 1e-6}, "normalize_image dx vs numeric"));
  }
}

TEST_CASE("resize_bilinear_forward equals preprocess.cpp bit for bit on RGB images") {
  const std::pair<int, int> sizes[] = {{1, 1}, {2, 3}, {5, 7}, {13, 4}, {224, 224}, {31, 17}};
  for (const auto& [ih, iw] : {std::pair{1, 1}, std::pair{4, 3}, std::pair{37, 53}, std::pair{256, 300}}) {
    const img::ImageF im = img::to_float(test_image(ih, iw, 3));
    for (const auto& [oh, ow] : sizes) {
      const Tensor got = ops::resize_bilinear_forward(ops::ResizeBilinearParams{oh, ow}, imagef_tensor(im));
      const Tensor expected = imagef_tensor(img::resize_bilinear(im, oh, ow));
      INFO(ih << "x" << iw << " -> " << oh << "x" << ow);
      CHECK(bitwise_equal(got, expected));
    }
  }
}

TEST_CASE("resize_bilinear_forward matches a double loop on batches and channel counts") {
  struct Case {
    Shape x;
    int64_t oh, ow;
  };
  const Case cases[] = {{{2, 5, 7, 1}, 3, 11}, {{3, 1, 9, 5}, 4, 2}, {{1, 8, 8, 64}, 16, 5},
                        {{2, 13, 11, 2}, 13, 11}, {{1, 2, 2, 3}, 9, 9}, {{0, 4, 4, 3}, 2, 2}};
  uint64_t seed = 20;
  for (const Case& c : cases) {
    const Tensor x = test::random_tensor(c.x, seed++);
    const Tensor y = ops::resize_bilinear_forward(ops::ResizeBilinearParams{c.oh, c.ow}, x);
    CHECK(y.shape() == Shape{c.x[0], c.oh, c.ow, c.x[3]});
    AE_REQUIRE_OK(test::compare(y, resize_reference(x, c.oh, c.ow), kResizeTol,
                                "resize " + shape_str(c.x) + " -> " + std::to_string(c.oh) + "x" + std::to_string(c.ow)));
  }
}

TEST_CASE("resize_bilinear_backward is the adjoint and matches finite differences") {
  struct Case {
    Shape x;
    int64_t oh, ow;
  };
  // Upsampling (several outputs read a pixel), shrinking (some pixels are read by none), 1-pixel
  // axes, identity, mixed.
  const Case cases[] = {{{2, 3, 4, 2}, 7, 9},  {{1, 9, 11, 3}, 4, 3}, {{1, 1, 5, 1}, 3, 12},
                        {{1, 6, 6, 2}, 6, 6},  {{2, 5, 3, 3}, 2, 8},  {{1, 16, 4, 1}, 5, 4}};
  uint64_t seed = 40;
  for (const Case& c : cases) {
    const ops::ResizeBilinearParams p{c.oh, c.ow};
    Tensor x = test::random_tensor(c.x, seed++);
    const Tensor g = test::random_tensor({c.x[0], c.oh, c.ow, c.x[3]}, seed++);
    const Tensor dx = ops::resize_bilinear_backward(p, g, c.x);
    REQUIRE(dx.shape() == c.x);
    const std::string what = "resize backward " + shape_str(c.x) + " -> " + std::to_string(c.oh) + "x" +
                             std::to_string(c.ow);
    // <R x, g> = <x, R^T g> for random x: exact up to float rounding.
    const double lhs = dot(ops::resize_bilinear_forward(p, x), g), rhs = dot(x, dx);
    INFO(what);
    CHECK(std::fabs(lhs - rhs) <= 1e-5 * (1.0 + std::fabs(lhs)));
    const std::vector<double> numeric =
        test::numeric_gradient(x, [&] { return dot(ops::resize_bilinear_forward(p, x), g); }, 1e-2);
    AE_REQUIRE_OK(test::compare(dx, numeric, test::Tolerance{1e-3, 1e-3, 1e-6}, what));
  }
}

TEST_CASE("image ops reject bad arguments with a message naming the op and the problem") {
  const ops::NormalizeImageParams p;
  require_error([&] { ops::normalize_image(p, Tensor::zeros({4, 4})); }, {"normalize_image"});
  require_error([&] { ops::normalize_image(p, Tensor::zeros({1, 4, 4, 5})); }, {"5 channels"});
  require_error([&] { ops::normalize_image(p, Tensor::zeros({4, 4, 3}, DType::i64)); }, {"u8 or f32"});
  ops::NormalizeImageParams zero_std;
  zero_std.std[2] = 0.0f;
  require_error([&] { ops::normalize_image(zero_std, Tensor::zeros({4, 4, 3})); }, {"std"});
  require_error([&] { ops::normalize_image_backward(p, Tensor::zeros({1, 4, 4, 3}), Shape{4, 5, 3}); },
                {"normalize_image_backward"});
  const Tensor x = Tensor::zeros({1, 4, 4, 3});
  require_error([&] { ops::resize_bilinear_forward(ops::ResizeBilinearParams{0, 5}, x); }, {"output size"});
  require_error([&] { ops::resize_bilinear_forward(ops::ResizeBilinearParams{5, 5}, Tensor::zeros({4, 4, 3})); },
                {"NHWC"});
  require_error([&] { ops::resize_bilinear_forward(ops::ResizeBilinearParams{5, 5}, Tensor::zeros({1, 0, 4, 3})); },
                {"height and width"});
  require_error(
      [&] { ops::resize_bilinear_backward(ops::ResizeBilinearParams{5, 5}, Tensor::zeros({1, 5, 4, 3}), x.shape()); },
      {"dy"});
}

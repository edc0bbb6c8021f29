// Resizing and eval preprocessing against PyTorch 1.13 (Debian's python3-torch), whose outputs for
// a tiny image are pasted below as literals. They were made with
//   x = torch.tensor([((i*37) % 101) / 100 for i in range(36)]).reshape(1,3,4,3).permute(0,3,1,2)
//   F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False, antialias=False or True)
// and printed NHWC; kPreprocessEval4 is
//   Normalize(mean, std)(F.interpolate(u8.float()/255, (4,4), bilinear, align_corners=False))
// for the 2x3 u8 image ((i*53 + 11) % 256). A wider sweep generated at test time lives in
// test_resize_torch.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/error.h"
#include "tests/support/check.h"
#include "train/preprocess.h"

using ae::img::ImageF;

namespace {

const std::vector<float> kBilinear5x7 = {
    0.0f, 0.370000005f, 0.74000001f, 0.035714291f, 0.405714273f, 0.775714278f, 0.0928571448f, 0.462857127f,
    0.832857132f, 0.150000006f, 0.519999981f, 0.889999986f, 0.207142875f, 0.577142894f, 0.87499994f,
    0.264285743f, 0.634285748f, 0.35499984f, 0.300000012f, 0.670000017f, 0.0299999993f, 0.160000011f,
    0.530000031f, 0.495999992f, 0.195714295f, 0.5657143f, 0.531714261f, 0.252857178f, 0.622857153f,
    0.588857114f, 0.310000032f, 0.680000007f, 0.645999968f, 0.367142916f, 0.708285749f, 0.659857094f,
    0.42428574f, 0.534571409f, 0.370714188f, 0.460000038f, 0.425999999f, 0.190000013f, 0.400000036f,
    0.769999921f, 0.130000025f, 0.435714304f, 0.80571419f, 0.165714309f, 0.492857188f, 0.862857044f,
    0.222857177f, 0.550000012f, 0.919999957f, 0.280000061f, 0.607142925f, 0.904999912f, 0.337142915f,
    0.664285719f, 0.384999841f, 0.394285768f, 0.699999928f, 0.060000021f, 0.430000037f, 0.640000045f,
    0.403999925f, 0.370000005f, 0.675714314f, 0.439714223f, 0.405714303f, 0.732857168f, 0.496857077f,
    0.462857187f, 0.790000021f, 0.55399996f, 0.520000041f, 0.803857148f, 0.582285643f, 0.577142954f,
    0.514714181f, 0.408571362f, 0.634285748f, 0.333999932f, 0.300000042f, 0.670000017f, 0.800000012f,
    0.159999996f, 0.529999971f, 0.835714281f, 0.19571428f, 0.56571424f, 0.892857134f, 0.252857149f,
    0.622857153f, 0.949999988f, 0.310000002f, 0.680000007f, 0.934999943f, 0.367142886f, 0.73714292f,
    0.414999843f, 0.42428574f, 0.794285715f, 0.0900000036f, 0.460000038f, 0.829999983f
};
const std::vector<float> kBilinear2x3 = {
    0.116666675f, 0.486666679f, 0.604166687f, 0.25f, 0.620000005f, 0.737500012f, 0.383333325f, 0.542916656f,
    0.239583269f, 0.716666698f, 0.329166651f, 0.446666628f, 0.849999964f, 0.462500006f, 0.579999983f,
    0.352083266f, 0.385416657f, 0.713333368f
};
const std::vector<float> kBilinear1x1 = {
    0.550000012f, 0.920000017f, 0.280000001f
};
const std::vector<float> kBilinear3x2 = {
    0.0500000007f, 0.420000017f, 0.789999962f, 0.25f, 0.620000005f, 0.484999985f, 0.449999988f, 0.819999993f,
    0.180000007f, 0.649999976f, 0.514999986f, 0.379999995f, 0.850000024f, 0.209999993f, 0.579999983f,
    0.545000017f, 0.410000026f, 0.779999971f
};
const std::vector<float> kBilinear6x4 = {
    0.0f, 0.370000005f, 0.74000001f, 0.100000001f, 0.469999999f, 0.839999974f, 0.200000003f, 0.569999993f,
    0.939999998f, 0.300000012f, 0.670000017f, 0.0299999993f, 0.100000001f, 0.469999999f, 0.587499976f,
    0.200000003f, 0.569999993f, 0.6875f, 0.300000012f, 0.670000017f, 0.787500024f, 0.400000006f, 0.517499983f,
    0.129999995f, 0.300000012f, 0.669999957f, 0.282499999f, 0.400000006f, 0.770000041f, 0.382499993f, 0.5f,
    0.870000005f, 0.482500017f, 0.599999964f, 0.212500006f, 0.329999983f, 0.5f, 0.617500007f, 0.229999989f,
    0.600000024f, 0.717499971f, 0.330000013f, 0.700000048f, 0.817499995f, 0.430000007f, 0.547500014f,
    0.159999996f, 0.529999971f, 0.700000048f, 0.3125f, 0.429999977f, 0.799999952f, 0.412499994f, 0.529999971f,
    0.899999976f, 0.512500048f, 0.629999995f, 0.242500007f, 0.359999985f, 0.730000019f, 0.800000012f,
    0.159999996f, 0.529999971f, 0.899999976f, 0.25999999f, 0.629999995f, 1.0f, 0.360000014f, 0.730000019f,
    0.0900000036f, 0.460000008f, 0.829999983f
};
const std::vector<float> kAntialias2x3 = {
    0.180000022f, 0.550000012f, 0.54124999f, 0.300000012f, 0.670000017f, 0.661249995f, 0.420000017f,
    0.524874926f, 0.33937493f, 0.680000007f, 0.418750048f, 0.409999967f, 0.800000012f, 0.538750052f,
    0.530000031f, 0.478124976f, 0.393624991f, 0.650000036f
};
const std::vector<float> kAntialias1x1 = {
    0.489880919f, 0.54124999f, 0.508452296f
};
const std::vector<float> kAntialias5x7 = {
    0.0f, 0.370000005f, 0.74000001f, 0.0357142948f, 0.405714303f, 0.775714278f, 0.0928571448f, 0.462857157f,
    0.832857132f, 0.150000006f, 0.519999981f, 0.889999986f, 0.207142875f, 0.577142894f, 0.874999821f,
    0.264285743f, 0.634285748f, 0.35499984f, 0.300000012f, 0.670000017f, 0.0299999993f, 0.160000011f,
    0.530000031f, 0.495999992f, 0.19571431f, 0.5657143f, 0.531714261f, 0.252857178f, 0.622857153f,
    0.588857114f, 0.310000032f, 0.680000007f, 0.645999968f, 0.367142886f, 0.708285689f, 0.659857035f,
    0.42428574f, 0.534571409f, 0.370714217f, 0.460000008f, 0.425999969f, 0.190000013f, 0.400000006f,
    0.769999981f, 0.129999995f, 0.435714304f, 0.805714309f, 0.165714294f, 0.492857158f, 0.862857163f,
    0.222857147f, 0.550000012f, 0.920000017f, 0.280000001f, 0.607142866f, 0.904999852f, 0.337142885f,
    0.664285719f, 0.384999871f, 0.394285738f, 0.699999988f, 0.0599999987f, 0.430000007f, 0.640000045f,
    0.403999895f, 0.370000035f, 0.675714374f, 0.439714223f, 0.405714363f, 0.732857227f, 0.496857077f,
    0.462857217f, 0.790000081f, 0.553999901f, 0.520000041f, 0.803857088f, 0.582285583f, 0.577142954f,
    0.514714181f, 0.408571392f, 0.634285748f, 0.333999902f, 0.300000072f, 0.670000076f, 0.800000012f,
    0.159999996f, 0.529999971f, 0.835714281f, 0.19571428f, 0.5657143f, 0.892857134f, 0.252857149f,
    0.622857153f, 0.949999988f, 0.310000002f, 0.680000007f, 0.934999824f, 0.367142886f, 0.737142861f,
    0.414999843f, 0.42428574f, 0.794285715f, 0.0900000036f, 0.460000008f, 0.829999983f
};
const std::vector<float> kAntialias2x2 = {
    0.221428588f, 0.591428638f, 0.582678616f, 0.378571451f, 0.586250007f, 0.469285697f, 0.721428573f,
    0.460178614f, 0.451428592f, 0.608035743f, 0.455000043f, 0.60857147f
};
const std::vector<float> kPreprocessEval4 = {
    -1.92953169f, -0.915266037f, 0.234771311f, -0.227759242f, 0.824492276f, -0.821873546f, 0.170391202f,
    1.23152995f, -0.416644812f, -0.867796898f, 0.170168057f, 1.31538141f, -0.98338902f, -1.06845224f,
    0.0822659358f, 0.0333933085f, 0.671305954f, -0.277211279f, 0.0205496773f, 1.07834387f, 0.12801753f,
    -1.01763856f, 0.0169818681f, 1.16287589f, 0.908896387f, -1.37482488f, -0.222745076f, 0.555698276f,
    0.36493355f, 0.812113464f, -0.279133499f, 0.771971285f, 1.21734214f, -1.31732178f, -0.289390773f,
    0.857865155f, 1.85503888f, -1.5280112f, -0.375250459f, 0.816850662f, 0.211747229f, 1.35677564f,
    -0.428975016f, 0.618784964f, 1.76200461f, -1.46716332f, -0.442576975f, 0.705359638f
};

ImageF tiny_image() {
  ImageF im;
  im.height = 3;
  im.width = 4;
  for (int i = 0; i < 36; ++i) im.rgb.push_back(static_cast<float>((i * 37) % 101) / 100.0f);
  return im;
}

std::vector<double> as_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// PyTorch's CPU kernel may contract multiply-adds into FMAs; allow a few float ulps.
const ae::test::Tolerance kFloatUlps{2e-7, 1e-6, 1e-12};

}  // namespace

TEST_CASE("resize_bilinear matches torch F.interpolate(bilinear, align_corners=False, antialias=False)") {
  const ImageF im = tiny_image();
  const struct {
    int h, w;
    const std::vector<float>* ref;
  } cases[] = {{5, 7, &kBilinear5x7}, {2, 3, &kBilinear2x3}, {1, 1, &kBilinear1x1}, {3, 2, &kBilinear3x2},
               {6, 4, &kBilinear6x4}};
  for (const auto& c : cases) {
    CAPTURE(c.h);
    CAPTURE(c.w);
    const ImageF out = ae::img::resize_bilinear(im, c.h, c.w);
    CHECK(out.height == c.h);
    CHECK(out.width == c.w);
    AE_REQUIRE_OK(ae::test::compare(out.rgb, as_double(*c.ref), kFloatUlps, "bilinear"));
  }
}

TEST_CASE("resize_bilinear_antialias matches torch F.interpolate(..., antialias=True)") {
  const ImageF im = tiny_image();
  const struct {
    int h, w;
    const std::vector<float>* ref;
  } cases[] = {{2, 3, &kAntialias2x3}, {1, 1, &kAntialias1x1}, {5, 7, &kAntialias5x7}, {2, 2, &kAntialias2x2}};
  for (const auto& c : cases) {
    CAPTURE(c.h);
    CAPTURE(c.w);
    const ImageF out = ae::img::resize_bilinear_antialias(im, c.h, c.w);
    AE_REQUIRE_OK(ae::test::compare(out.rgb, as_double(*c.ref), {1e-6, 1e-5, 1e-10}, "antialias"));
  }
}

TEST_CASE("resize is the identity, bit for bit, when the size is unchanged") {
  ImageF im = tiny_image();
  im.rgb[5] = -0.3f;  // values outside [0,1] pass through untouched too
  im.rgb[7] = 1.5f;
  im.rgb[9] = 1e-30f;
  for (auto* resize : {static_cast<ImageF (*)(const ImageF&, int, int)>(&ae::img::resize_bilinear),
                       static_cast<ImageF (*)(const ImageF&, int, int)>(&ae::img::resize_bilinear_antialias)}) {
    const ImageF out = resize(im, im.height, im.width);
    REQUIRE(out.rgb.size() == im.rgb.size());
    CHECK(std::memcmp(out.rgb.data(), im.rgb.data(), im.rgb.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("resizing an 8-bit image equals resizing its to_float copy, bit for bit") {
  ae::img::Image im;
  im.width = 53;
  im.height = 29;
  for (int i = 0; i < im.width * im.height * 3; ++i) im.rgb.push_back(uint8_t((i * 97 + i / 7) % 256));
  const ImageF f = ae::img::to_float(im);
  for (auto [h, w] : {std::pair{29, 53}, {224, 224}, {7, 11}, {29, 20}}) {
    CAPTURE(h);
    CAPTURE(w);
    const ImageF a = ae::img::resize_bilinear(im, h, w), b = ae::img::resize_bilinear(f, h, w);
    REQUIRE(a.rgb.size() == b.rgb.size());
    CHECK(std::memcmp(a.rgb.data(), b.rgb.data(), a.rgb.size() * sizeof(float)) == 0);
    const ImageF c = ae::img::resize_bilinear_antialias(im, h, w), d = ae::img::resize_bilinear_antialias(f, h, w);
    REQUIRE(c.rgb.size() == d.rgb.size());
    CHECK(std::memcmp(c.rgb.data(), d.rgb.data(), c.rgb.size() * sizeof(float)) == 0);
  }
  CHECK_THROWS_AS(ae::img::resize_bilinear(im, 0, 3), ae::Error);
  CHECK_THROWS_AS(ae::img::resize_bilinear_antialias(ae::img::Image{}, 3, 3), ae::Error);
}

TEST_CASE("resizing a flat image keeps it flat, at any scale") {
  ImageF im;
  im.width = 37;
  im.height = 23;
  for (int i = 0; i < im.width * im.height; ++i) {
    im.rgb.push_back(0.25f);
    im.rgb.push_back(0.5f);
    im.rgb.push_back(0.75f);
  }
  for (auto [h, w] : {std::pair{224, 224}, {5, 3}, {1, 80}, {23, 11}}) {
    for (auto* resize : {static_cast<ImageF (*)(const ImageF&, int, int)>(&ae::img::resize_bilinear),
                         static_cast<ImageF (*)(const ImageF&, int, int)>(&ae::img::resize_bilinear_antialias)}) {
      const ImageF out = resize(im, h, w);
      for (std::size_t i = 0; i < out.rgb.size(); ++i)
        REQUIRE(out.rgb[i] == doctest::Approx(0.25 + 0.25 * double(i % 3)).epsilon(1e-6));
    }
  }
}

TEST_CASE("resize rejects bad sizes and bad images") {
  const ImageF im = tiny_image();
  CHECK_THROWS_AS(ae::img::resize_bilinear(im, 0, 4), ae::Error);
  CHECK_THROWS_AS(ae::img::resize_bilinear(im, 4, -1), ae::Error);
  CHECK_THROWS_AS(ae::img::resize_bilinear(im, 1 << 20, 4), ae::Error);
  CHECK_THROWS_AS(ae::img::resize_bilinear_antialias(ImageF{}, 4, 4), ae::Error);
  ImageF broken = im;
  broken.rgb.pop_back();
  CHECK_THROWS_AS(ae::img::resize_bilinear(broken, 2, 2), ae::Error);
}

TEST_CASE("normalize_imagenet gives a [1,H,W,3] tensor of (x - mean) / std") {
  const ImageF im = tiny_image();
  const ae::Tensor t = ae::img::normalize_imagenet(im);
  CHECK(t.shape() == ae::Shape{1, 3, 4, 3});
  const float* p = t.f32();
  for (std::size_t i = 0; i < im.rgb.size(); ++i) {
    const int c = int(i % 3);
    const double mean[3] = {0.485, 0.456, 0.406}, stdev[3] = {0.229, 0.224, 0.225};
    REQUIRE(p[i] == doctest::Approx((im.rgb[i] - mean[c]) / stdev[c]).epsilon(1e-6));
  }
}

TEST_CASE("preprocess_eval matches torchvision Normalize(F.interpolate(ToTensor(img)))") {
  ae::img::Image im;
  im.width = 3;
  im.height = 2;
  for (int i = 0; i < 18; ++i) im.rgb.push_back(uint8_t((i * 53 + 11) % 256));
  const ae::Tensor t = ae::img::preprocess_eval(im, 4);
  CHECK(t.shape() == ae::Shape{1, 4, 4, 3});
  AE_REQUIRE_OK(ae::test::compare(t, as_double(kPreprocessEval4), {2e-6, 1e-5, 1e-12}, "preprocess_eval"));
}

TEST_CASE("preprocess_eval keeps the native size for size <= 0 and when it already matches") {
  ae::img::Image im;
  im.width = 5;
  im.height = 3;
  for (int i = 0; i < 45; ++i) im.rgb.push_back(uint8_t(i * 5));
  const ae::Tensor direct = ae::img::normalize_imagenet(ae::img::to_float(im));
  for (int size : {0, -1}) {
    const ae::Tensor t = ae::img::preprocess_eval(im, size);
    CHECK(t.shape() == ae::Shape{1, 3, 5, 3});
    CHECK(t.to_vector() == direct.to_vector());
  }
  ae::img::Image square;
  square.width = square.height = 4;
  square.rgb.assign(48, 77);
  CHECK(ae::img::preprocess_eval(square, 4).to_vector() ==
        ae::img::normalize_imagenet(ae::img::to_float(square)).to_vector());
  CHECK(ae::img::preprocess_eval(im, 7).shape() == ae::Shape{1, 7, 7, 3});
  CHECK_THROWS_AS(ae::img::preprocess_eval(ae::img::Image{}, 224), ae::Error);
}

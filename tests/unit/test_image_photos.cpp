// Real photos: decodes the sample photos that Debian packages ship (skimage, matplotlib,
// scikit-learn; fetched by scripts/fetch_test_photos.sh into the build tree) and checks their
// sizes and pixel sums against PIL 9.4 (Debian's python3-pil, which uses the same libjpeg-turbo
// and, for RGBA, the same composite-on-white formula applied by hand). If the photos cannot be
// fetched (no network, not Debian) the whole binary reports SKIPPED, never passed.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "runtime/error.h"
#include "tests/support/check.h"
#include "tests/support/files.h"
#include "train/exif.h"
#include "train/image.h"
#include "train/preprocess.h"

namespace fs = std::filesystem;
using ae::img::Image;

namespace {

const std::string& photos_dir() { return ae::test::test_photos_dir(); }

bool have_photos() {
  if (!photos_dir().empty()) return true;
  ae::test::skip_binary("sample photos could not be fetched with scripts/fetch_test_photos.sh");
  return false;
}

struct Expected {
  const char* file;
  int width, height;
  int64_t sum;                // sum of all R, G, B values as PIL decodes them
  uint8_t first[3], last[3];  // top-left and bottom-right pixels
};

// Values printed by /usr/bin/python3 with PIL 9.4 (np.asarray(Image.open(f).convert('RGB')),
// RGBA composited on white with round((c*a + 255*(255-a)) / 255)).
const Expected kPhotos[] = {
    {"astronaut.png", 512, 512, 90124324, {154, 147, 151}, {0, 0, 0}},
    {"chelsea.png", 451, 300, 46802357, {143, 120, 104}, {162, 138, 128}},
    {"coffee.png", 600, 400, 71003487, {21, 13, 8}, {143, 60, 29}},
    {"camera.png", 512, 512, 101497485, {200, 200, 200}, {149, 149, 149}},        // 8-bit gray
    {"logo.png", 500, 500, 136059231, {255, 255, 255}, {255, 255, 255}},          // RGBA
    {"green_palette.png", 320, 240, 221214, {0, 0, 0}, {1, 1, 1}},                // palette
    {"rocket.jpg", 640, 427, 53516744, {17, 33, 58}, {83, 61, 37}},
    {"hubble_deep_field.jpg", 1000, 872, 50108051, {15, 7, 4}, {7, 18, 12}},      // has EXIF (orientation 1)
    {"grace_hopper.jpg", 512, 600, 74139337, {21, 24, 77}, {14, 13, 19}},
    {"china.jpg", 640, 427, 117812912, {174, 201, 231}, {15, 24, 7}},
    {"flower.jpg", 640, 427, 50751787, {2, 19, 13}, {9, 43, 27}},
};

int64_t pixel_sum(const Image& im) {
  int64_t s = 0;
  for (uint8_t v : im.rgb) s += v;
  return s;
}

}  // namespace

TEST_CASE("sample photos decode to PIL's size and pixels") {
  if (!have_photos()) return;
  for (const Expected& e : kPhotos) {
    const std::string name = e.file;
    CAPTURE(name);
    const auto t0 = std::chrono::steady_clock::now();
    const Image im = ae::img::read_image(photos_dir() + "/" + e.file);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE(name << ": " << im.width << "x" << im.height << " decoded in " << ms << " ms");
    REQUIRE(im.width == e.width);
    REQUIRE(im.height == e.height);
    CHECK(pixel_sum(im) == e.sum);
    for (int c = 0; c < 3; ++c) {
      CHECK(im.rgb[c] == e.first[c]);
      CHECK(im.rgb[im.rgb.size() - 3 + c] == e.last[c]);
    }
  }
}

TEST_CASE("skimage's truncated.jpg is refused, naming the file") {
  if (!have_photos()) return;
  const std::string path = photos_dir() + "/truncated.jpg";
  try {
    ae::img::read_image(path);
    FAIL("truncated.jpg decoded without an error");
  } catch (const ae::Error& e) {
    CHECK(std::string(e.what()).find("truncated.jpg") != std::string::npos);
  }
}

TEST_CASE("an EXIF orientation spliced into a real photo turns it upright") {
  if (!have_photos()) return;
  const std::vector<uint8_t> original = ae::img::read_file(photos_dir() + "/grace_hopper.jpg");
  const Image upright = ae::img::decode_image(original.data(), original.size(), "grace_hopper.jpg");
  // APP1 "Exif\0\0" + big-endian TIFF with one IFD0 entry: Orientation = 6 (rotate 90 clockwise).
  const std::vector<uint8_t> app1 = {0xFF, 0xE1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0, 0, 0, 8,
                                     0,    1,    0x01, 0x12, 0,   3,   0,   0,   0, 1, 0,   6,   0,   0, 0, 0, 0, 0};
  REQUIRE(app1.size() == 2 + 0x22);
  std::vector<uint8_t> rotated(original.begin(), original.begin() + 2);  // SOI
  rotated.insert(rotated.end(), app1.begin(), app1.end());
  rotated.insert(rotated.end(), original.begin() + 2, original.end());
  const Image im = ae::img::decode_image(rotated.data(), rotated.size(), "rotated.jpg");
  CHECK(im.width == 600);
  CHECK(im.height == 512);
  CHECK(im.rgb == ae::img::apply_orientation(upright, 6).rgb);
}

TEST_CASE("real photos survive PNG (exactly) and JPEG (closely) re-encoding") {
  if (!have_photos()) return;
  const Image im = ae::img::read_image(photos_dir() + "/chelsea.png");
  const std::string dir = ae::test::build_dir() + "/test-image-io";
  fs::create_directories(dir);
  ae::img::write_png(dir + "/chelsea_copy.png", im);
  CHECK(ae::img::read_image(dir + "/chelsea_copy.png").rgb == im.rgb);
  ae::img::write_jpeg(dir + "/chelsea_copy.jpg", im, 92);
  const Image back = ae::img::read_image(dir + "/chelsea_copy.jpg");
  double err = 0;
  for (std::size_t i = 0; i < im.rgb.size(); ++i) err += std::abs(int(im.rgb[i]) - int(back.rgb[i]));
  err /= double(im.rgb.size());
  MESSAGE("chelsea JPEG q92 mean |diff| " << err << ", " << fs::file_size(dir + "/chelsea_copy.jpg") << " bytes");
  CHECK(err < 3.0);
}

TEST_CASE("eval preprocessing of a real photo: 224x224 NHWC, finite, plausible range") {
  if (!have_photos()) return;
  const Image im = ae::img::read_image(photos_dir() + "/rocket.jpg");
  const ae::Tensor t = ae::img::preprocess_eval(im, 224);
  CHECK(t.shape() == ae::Shape{1, 224, 224, 3});
  const std::vector<float> v = t.to_vector();
  for (float x : v) {
    REQUIRE(std::isfinite(x));
    REQUIRE(x >= -2.2f);   // (0 - 0.485) / 0.229 = -2.118
    REQUIRE(x <= 2.7f);    // (1 - 0.406) / 0.225 = 2.640
  }
}

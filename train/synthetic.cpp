#include "train/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/philox.h"
#include "train/image.h"
#include "train/labels.h"

namespace ae::data {

double synthetic_score(double mean_luma) { return std::clamp(4.0 * (mean_luma - 0.5), -1.8, 1.8); }

namespace {

struct Rng {
  uint64_t key, i = 0;
  float uniform() { return philox::uniform(key, i++); }
};

img::Image draw_image(const SyntheticConfig& c, int index) {
  Rng rng{c.seed * 1000003ull + static_cast<uint64_t>(index)};
  img::Image im;
  im.width = c.width;
  im.height = c.height;
  im.rgb.resize(static_cast<std::size_t>(c.width) * c.height * 3);
  const float brightness = 0.15f + 0.7f * rng.uniform();
  float base[3], accent[3];
  for (int k = 0; k < 3; ++k) {
    base[k] = 0.6f + 0.4f * rng.uniform();
    accent[k] = 0.3f + 0.7f * rng.uniform();
  }
  // A vertical gradient plus two discs of an accent colour at random places.
  float cx[2], cy[2], rad[2];
  for (int d = 0; d < 2; ++d) {
    cx[d] = rng.uniform() * static_cast<float>(c.width);
    cy[d] = rng.uniform() * static_cast<float>(c.height);
    rad[d] = (0.1f + 0.25f * rng.uniform()) * static_cast<float>(std::min(c.width, c.height));
  }
  const float slope = rng.uniform() * 0.4f - 0.2f;
  for (int y = 0; y < c.height; ++y)
    for (int x = 0; x < c.width; ++x) {
      const float g = 1.0f + slope * (static_cast<float>(y) / static_cast<float>(c.height) - 0.5f);
      bool in_disc = false;
      for (int d = 0; d < 2; ++d) {
        const float dx = static_cast<float>(x) - cx[d], dy = static_cast<float>(y) - cy[d];
        in_disc |= dx * dx + dy * dy < rad[d] * rad[d];
      }
      for (int k = 0; k < 3; ++k) {
        const float v = brightness * g * (in_disc ? accent[k] : base[k]) + 0.03f * (rng.uniform() - 0.5f);
        im.rgb[(static_cast<std::size_t>(y) * c.width + x) * 3 + k] =
            static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
      }
    }
  return im;
}

double mean_luma(const img::Image& im) {
  double s = 0;
  const std::size_t n = static_cast<std::size_t>(im.width) * im.height;
  for (std::size_t i = 0; i < n; ++i)
    s += 0.299 * im.rgb[3 * i] + 0.587 * im.rgb[3 * i + 1] + 0.114 * im.rgb[3 * i + 2];
  return s / static_cast<double>(n) / 255.0;
}

}  // namespace

std::string make_synthetic_dataset(const std::string& dir, const SyntheticConfig& c) {
  AE_CHECK(c.count >= 1 && c.width >= 8 && c.height >= 8,
           "synthetic data set: need count >= 1 and images of at least 8x8, got " << c.count << " of " << c.width
                                                                                 << "x" << c.height);
  std::filesystem::create_directories(dir);
  std::vector<Rating> rows;
  for (int i = 0; i < c.count; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "img_%05d.png", i);
    const img::Image im = draw_image(c, i);
    img::write_png((std::filesystem::path(dir) / name).string(), im);
    rows.push_back({name, synthetic_score(mean_luma(im)), ""});
  }
  const std::string csv = (std::filesystem::path(dir) / "labels.csv").string();
  const std::string text = to_plain_csv(rows);
  atomic_write(csv, text.data(), text.size());
  return csv;
}

}  // namespace ae::data

#include "train/transforms.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"
#include "runtime/philox.h"
#include "train/preprocess.h"

namespace ae::data {

ResizeMode parse_resize_mode(const std::string& text) {
  if (text == "squash") return ResizeMode::squash;
  if (text == "aspect") return ResizeMode::aspect;
  AE_FAIL("unknown resize mode '" << text << "': expected squash or aspect");
}

namespace {

// Three independent draws per (seed, epoch, sample): flip, crop y, crop x.
struct Augment {
  bool flip = false;
  int y0 = 0, x0 = 0;
};

Augment draw(uint64_t seed, uint64_t epoch, uint64_t sample, int free_h, int free_w) {
  const uint64_t key = seed ^ (epoch * 0x9E3779B97F4A7C15ull);
  const uint64_t base = sample * 4;
  Augment a;
  a.flip = philox::uniform(key, base) < 0.5f;
  a.y0 = free_h > 0 ? static_cast<int>(philox::u32(key, base + 1) % static_cast<uint32_t>(free_h)) : 0;
  a.x0 = free_w > 0 ? static_cast<int>(philox::u32(key, base + 2) % static_cast<uint32_t>(free_w)) : 0;
  return a;
}

void crop_normalise(const img::ImageF& im, int y0, int x0, int size, bool flip, float* out) {
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const int sx = flip ? x0 + size - 1 - x : x0 + x;
      const float* s = &im.rgb[(static_cast<std::size_t>(y0 + y) * im.width + sx) * 3];
      float* d = out + (static_cast<std::size_t>(y) * size + x) * 3;
      for (int c = 0; c < 3; ++c) d[c] = (s[c] - img::kImagenetMean[c]) / img::kImagenetStd[c];
    }
  }
}

}  // namespace

void apply_transform(const img::Image& im, const TransformConfig& cfg, uint64_t seed, uint64_t epoch,
                     uint64_t sample, float* out) {
  AE_CHECK(cfg.size > 0 && cfg.resize_to >= cfg.size,
           "transform: size " << cfg.size << " and resize_to " << cfg.resize_to
                              << " must satisfy 0 < size <= resize_to");
  const img::ImageF f = img::to_float(im);
  img::ImageF r;
  if (cfg.mode == ResizeMode::squash) {
    const int side = cfg.train ? cfg.resize_to : cfg.size;
    r = img::resize_bilinear(f, side, side);
  } else {
    const int shorter = std::min(f.width, f.height);
    const double s = static_cast<double>(cfg.resize_to) / shorter;
    const int h = std::max(cfg.size, static_cast<int>(std::lround(f.height * s)));
    const int w = std::max(cfg.size, static_cast<int>(std::lround(f.width * s)));
    r = img::resize_bilinear(f, h, w);
  }
  const int free_h = r.height - cfg.size, free_w = r.width - cfg.size;
  if (cfg.train) {
    const Augment a = draw(seed, epoch, sample, free_h, free_w);
    crop_normalise(r, a.y0, a.x0, cfg.size, a.flip, out);
  } else {
    crop_normalise(r, free_h / 2, free_w / 2, cfg.size, false, out);
  }
}

}  // namespace ae::data

#include "train/photo_people.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <utility>

#include "model/checkpoint.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "train/preprocess.h"
#include "train/seeded_stream.h"

namespace ae::data {

namespace fs = std::filesystem;

namespace {

constexpr double kQualityWeight = 1.0;  // everyone's liking for shared quality
constexpr double kStarScale = 1.2;      // stars per unit of utility
constexpr double kTasteClamp = 2.5;     // standardised taste statistics are clamped to +-this
constexpr int kStoredQuality = 95;      // JPEG quality of a variant without a compression defect
constexpr int kHeldOutSide = 640;       // held-out photos are shrunk to this long side at most

enum : uint64_t { kVariantStream = 11, kRatingStream = 12, kChoiceStream = 13 };

// The edits and defects of one variant, drawn from its own stream.
struct Variant {
  std::string name, photo;
  bool people = false;  // in the persons' pool (else generic training)
  double crop_area = 1, exposure = 0, contrast = 0, saturation = 0, temperature = 0, tint = 0;
  double blur = 0, noise = 0;
  int jpeg_quality = kStoredQuality;
  PhotoStats stats;
  double quality = 1;
};

double luma_of(const float* p) { return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]; }

img::ImageF crop(const img::Image& im, int x0, int y0, int w, int h) {
  img::Image c;
  c.width = w;
  c.height = h;
  c.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    std::copy_n(&im.rgb[(static_cast<std::size_t>(y0 + y) * im.width + x0) * 3], static_cast<std::size_t>(w) * 3,
                &c.rgb[static_cast<std::size_t>(y) * w * 3]);
  return img::to_float(c);
}

// A random crop of 45-100% of the photo's area (aspect within e^+-0.2 of the photo's), shrunk
// with the antialiasing filter so that its long side is `side`.
img::ImageF draw_crop(const img::Image& photo, int side, SeededStream& rng, Variant& v) {
  v.crop_area = rng.uniform(0.45, 1.0);
  const double aspect = std::exp(rng.uniform(-0.2, 0.2));
  const int w = std::clamp(static_cast<int>(std::lround(std::sqrt(v.crop_area * aspect) * photo.width)), 8, photo.width);
  const int h = std::clamp(static_cast<int>(std::lround(std::sqrt(v.crop_area / aspect) * photo.height)), 8, photo.height);
  const int x0 = std::min(photo.width - w, static_cast<int>(rng.uniform() * static_cast<float>(photo.width - w + 1)));
  const int y0 = std::min(photo.height - h, static_cast<int>(rng.uniform() * static_cast<float>(photo.height - h + 1)));
  const double scale = static_cast<double>(side) / std::max(w, h);
  const int out_w = std::max(8, static_cast<int>(std::lround(w * scale)));
  const int out_h = std::max(8, static_cast<int>(std::lround(h * scale)));
  return img::resize_bilinear_antialias(crop(photo, x0, y0, w, h), out_h, out_w);
}

// Exposure (stops), contrast around the mean luma, saturation around each pixel's luma (log
// scales), temperature (red up, blue down) and tint (green), then clamped to [0, 1].
void apply_edits(img::ImageF& im, const Variant& v) {
  const std::size_t n = static_cast<std::size_t>(im.width) * im.height;
  const float gain = static_cast<float>(std::exp2(v.exposure));
  const float wb[3] = {static_cast<float>(std::exp(v.temperature)), static_cast<float>(std::exp(v.tint)),
                       static_cast<float>(std::exp(-v.temperature))};
  double mean = 0;
  for (std::size_t i = 0; i < n; ++i) {
    float* p = &im.rgb[3 * i];
    for (int c = 0; c < 3; ++c) p[c] = std::clamp(p[c] * gain * wb[c], 0.0f, 1.0f);
    mean += luma_of(p);
  }
  mean /= static_cast<double>(n);
  const float k_contrast = static_cast<float>(std::exp(v.contrast)), k_sat = static_cast<float>(std::exp(v.saturation));
  for (std::size_t i = 0; i < n; ++i) {
    float* p = &im.rgb[3 * i];
    for (int c = 0; c < 3; ++c) p[c] = static_cast<float>(mean) + (p[c] - static_cast<float>(mean)) * k_contrast;
    const float l = static_cast<float>(luma_of(p));
    for (int c = 0; c < 3; ++c) p[c] = std::clamp(l + (p[c] - l) * k_sat, 0.0f, 1.0f);
  }
}

// Separable Gaussian blur, edges clamped.
void blur(img::ImageF& im, double sigma) {
  const int r = static_cast<int>(std::ceil(3 * sigma));
  std::vector<float> taps(static_cast<std::size_t>(2 * r + 1));
  double sum = 0;
  for (int k = -r; k <= r; ++k) sum += taps[static_cast<std::size_t>(k + r)] = static_cast<float>(std::exp(-0.5 * k * k / (sigma * sigma)));
  for (float& t : taps) t = static_cast<float>(t / sum);
  const int w = im.width, h = im.height;
  std::vector<float> tmp(im.rgb.size());
  auto at = [](int i, int n) { return std::clamp(i, 0, n - 1); };
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        float s = 0;
        for (int k = -r; k <= r; ++k) s += taps[static_cast<std::size_t>(k + r)] * im.rgb[(static_cast<std::size_t>(y) * w + at(x + k, w)) * 3 + c];
        tmp[(static_cast<std::size_t>(y) * w + x) * 3 + c] = s;
      }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        float s = 0;
        for (int k = -r; k <= r; ++k) s += taps[static_cast<std::size_t>(k + r)] * tmp[(static_cast<std::size_t>(at(y + k, h)) * w + x) * 3 + c];
        im.rgb[(static_cast<std::size_t>(y) * w + x) * 3 + c] = s;
      }
}

// About half the variants are clean; the others get one to three of blur, noise and heavy JPEG.
void draw_defects(SeededStream& rng, Variant& v) {
  if (rng.uniform() < 0.45f) return;
  bool want[3] = {rng.uniform() < 0.5f, rng.uniform() < 0.5f, rng.uniform() < 0.5f};
  const int forced = std::min(2, static_cast<int>(rng.uniform() * 3.0f));  // the one taken when none was drawn
  if (!want[0] && !want[1] && !want[2]) want[forced] = true;
  if (want[0]) v.blur = rng.uniform(0.8, 3.0);
  if (want[1]) v.noise = rng.uniform(0.02, 0.12);
  if (want[2]) v.jpeg_quality = 6 + std::min(29, static_cast<int>(rng.uniform() * 30.0f));
}

double shared_quality(const Variant& v) {
  double defect = v.blur / 3.0 + v.noise / 0.12;
  if (v.jpeg_quality < 40) defect += 1.0 - v.jpeg_quality / 40.0;
  const double under_exposed = std::max(0.0, 0.3 - v.stats.luma);
  return std::clamp(1.0 - defect / 2.0 - 2.0 * v.stats.clipped - 2.0 * under_exposed, 0.0, 1.0);
}

// The variant's image as stored (JPEG bytes) and its description.
std::vector<uint8_t> make_variant(const img::Image& photo, const PhotoPeopleConfig& c, uint64_t photo_index,
                                  int index, Variant& v) {
  SeededStream rng{stream_key(c.seed, kVariantStream, photo_index, static_cast<uint64_t>(index))};
  img::ImageF im = draw_crop(photo, c.side, rng, v);
  v.exposure = rng.uniform(-1.3, 0.9);
  v.contrast = rng.uniform(-0.45, 0.45);
  v.saturation = rng.uniform(-1.4, 0.7);
  v.temperature = rng.uniform(-0.35, 0.35);
  v.tint = rng.uniform(-0.08, 0.08);
  apply_edits(im, v);
  draw_defects(rng, v);
  if (v.blur > 0) blur(im, v.blur);
  if (v.noise > 0)
    for (float& x : im.rgb) x = static_cast<float>(x + v.noise * rng.gaussian());
  std::vector<uint8_t> bytes = img::encode_jpeg(img::to_u8(im), {.quality = v.jpeg_quality});
  v.stats = measure_photo(img::decode_jpeg(bytes.data(), bytes.size(), v.name));
  v.quality = shared_quality(v);
  return bytes;
}

// A rater's taste: a weight on each standardised statistic (warm, vivid, moody order).
using Taste = std::array<double, 3>;

const std::vector<std::pair<std::string, Taste>>& test_persons() {
  static const std::vector<std::pair<std::string, Taste>> persons = {
      {"warm", {1, 0, 0}}, {"vivid", {0, 1, 0}}, {"moody", {0, 0, 1}}};
  return persons;
}

// Anonymous rater r of n: pair r / 2 likes axis (r / 2) % 3, one of the pair + and the other -;
// an odd last rater is neutral. Their personal terms sum to zero.
Taste anonymous_taste(int r, int n) {
  Taste t{0, 0, 0};
  if (r >= 2 * (n / 2)) return t;
  t[static_cast<std::size_t>((r / 2) % 3)] = r % 2 == 0 ? 1.0 : -1.0;
  return t;
}

struct Standardiser {
  std::array<double, 3> mean{}, std{};
  std::array<double, 3> operator()(const PhotoStats& s) const {
    const std::array<double, 3> raw = {s.warmth, s.chroma, -s.luma};
    std::array<double, 3> z{};
    for (std::size_t k = 0; k < 3; ++k) z[k] = std::clamp((raw[k] - mean[k]) / std[k], -kTasteClamp, kTasteClamp);
    return z;
  }
};

Standardiser fit_standardiser(const std::vector<Variant>& variants) {
  Standardiser st;
  for (const Variant& v : variants) {
    const std::array<double, 3> raw = {v.stats.warmth, v.stats.chroma, -v.stats.luma};
    for (std::size_t k = 0; k < 3; ++k) st.mean[k] += raw[k], st.std[k] += raw[k] * raw[k];
  }
  const double n = static_cast<double>(variants.size());
  for (std::size_t k = 0; k < 3; ++k) {
    st.mean[k] /= n;
    st.std[k] = std::sqrt(std::max(st.std[k] / n - st.mean[k] * st.mean[k], 1e-12));
  }
  return st;
}

// z of one rating by rater stream `rater` (anonymous 0.., persons 1000..) of variant `index`.
double rate(const PhotoPeopleConfig& c, const Taste& t, const std::array<double, 3>& taste_z, double quality,
            uint64_t rater, std::size_t index) {
  SeededStream rng{stream_key(c.seed, kRatingStream, rater, index)};
  double u = kQualityWeight * (2.0 * quality - 1.0);
  for (std::size_t k = 0; k < 3; ++k) u += t[k] * taste_z[k];
  const double raw = 3.0 + kStarScale * u + c.noise * rng.gaussian();
  const double stars = static_cast<double>(std::lround(std::clamp(raw, 1.0, 5.0)));
  const model::TargetNorm norm;
  return (stars - norm.mean) / norm.std;
}

void check_config(const PhotoPeopleConfig& c) {
  AE_CHECK(!c.photos.empty(), "photo data set: no photos to make variants of");
  AE_CHECK(c.side >= 32 && c.side <= 4096, "photo data set: the variants' long side must be in 32..4096, got " << c.side);
  AE_CHECK(c.variants_per_photo >= 2 && c.people_variants_per_photo >= 1 &&
               c.people_variants_per_photo < c.variants_per_photo,
           "photo data set: need 2 or more variants per photo, of which 1 .. variants-1 for the people; got "
               << c.variants_per_photo << " and " << c.people_variants_per_photo);
  const long pool = static_cast<long>(c.photos.size()) * c.people_variants_per_photo;
  AE_CHECK(c.ratings_per_person >= 2 && c.ratings_per_person <= pool,
           "photo data set: each person rates " << c.ratings_per_person << " distinct variants, but the people's pool holds "
                                                << pool << " (" << c.photos.size() << " photos x "
                                                << c.people_variants_per_photo << ")");
  AE_CHECK(c.train_raters >= 1, "photo data set: need at least one anonymous rater, got " << c.train_raters);
  AE_CHECK(std::isfinite(c.noise) && c.noise >= 0, "photo data set: rating noise must be finite and >= 0, got " << c.noise);
  std::set<std::string> stems;
  for (const auto& list : {c.photos, c.held_out})
    for (const std::string& p : list)
      AE_CHECK(stems.insert(fs::path(p).stem().string()).second,
               "photo data set: photo '" << p << "' is listed twice (names must differ without their extension)");
}

std::string variant_name(const std::string& photo, int index) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "_v%03d.jpg", index);
  return fs::path(photo).stem().string() + buf;
}

void write_text(const std::string& path, const std::string& text) { atomic_write(path, text.data(), text.size()); }

}  // namespace

std::vector<std::string> default_demo_photos() {
  return {"astronaut.png", "coffee.png",       "rocket.jpg", "motorcycle_left.png", "grace_hopper.jpg",
          "flower.jpg",    "hubble_deep_field.jpg", "camera.png"};
}

std::vector<std::string> default_held_out_photos() { return {"chelsea.png", "china.jpg"}; }

PhotoStats measure_photo(const img::Image& im) {
  img::check_image(im, "measure_photo");
  AE_CHECK(im.width > 0 && im.height > 0, "measure_photo: empty image");
  PhotoStats s;
  const std::size_t n = static_cast<std::size_t>(im.width) * im.height;
  long clipped = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double r = im.rgb[3 * i] / 255.0, g = im.rgb[3 * i + 1] / 255.0, b = im.rgb[3 * i + 2] / 255.0;
    const double l = 0.299 * r + 0.587 * g + 0.114 * b;
    s.luma += l;
    s.warmth += r - b;
    s.chroma += std::max({r, g, b}) - std::min({r, g, b});
    clipped += l <= 0.02 || l >= 0.98;
  }
  s.luma /= static_cast<double>(n);
  s.warmth /= static_cast<double>(n);
  s.chroma /= static_cast<double>(n);
  s.clipped = static_cast<double>(clipped) / static_cast<double>(n);
  return s;
}

std::vector<std::string> photo_people_names() {
  std::vector<std::string> names;
  for (const auto& p : test_persons()) names.push_back(p.first);
  return names;
}

double photo_person_taste(const std::string& person, const PhotoStats& s) {
  if (person == "warm") return s.warmth;
  if (person == "vivid") return s.chroma;
  if (person == "moody") return -s.luma;
  AE_FAIL("photo data set: unknown person '" << person << "' (known: warm, vivid, moody)");
}

std::string photo_person_taste_name(const std::string& person) {
  if (person == "warm") return "warm light: mean R - B";
  if (person == "vivid") return "vivid colour: mean chroma, max(R,G,B) - min(R,G,B)";
  if (person == "moody") return "dark, moody images: minus mean luma";
  AE_FAIL("photo data set: unknown person '" << person << "' (known: warm, vivid, moody)");
}

PhotoPeopleDataset make_photo_people_dataset(const std::string& dir, const PhotoPeopleConfig& c) {
  check_config(c);
  PhotoPeopleDataset out;
  out.images_dir = (fs::path(dir) / "images").string();
  out.held_out_dir = (fs::path(dir) / "held-out").string();
  out.train_csv = (fs::path(dir) / "train_means_normalized.csv").string();
  out.workers_csv = (fs::path(dir) / "test_workers_dataset_normalized.csv").string();
  out.attributes_csv = (fs::path(dir) / "attributes.csv").string();
  out.people = photo_people_names();
  fs::create_directories(out.images_dir);
  fs::create_directories(out.held_out_dir);

  // The variants, photo by photo (a photo's pixels are needed only while its variants are made).
  std::vector<Variant> variants;
  for (std::size_t p = 0; p < c.photos.size(); ++p) {
    const img::Image photo = img::read_image((fs::path(c.photos_dir) / c.photos[p]).string());
    AE_CHECK(photo.width >= 16 && photo.height >= 16,
             "photo data set: photo '" << c.photos[p] << "' is " << photo.width << "x" << photo.height
                                       << ", too small for crops (at least 16x16)");
    for (int i = 0; i < c.variants_per_photo; ++i) {
      Variant v;
      v.photo = c.photos[p];
      v.name = variant_name(c.photos[p], i);
      v.people = i >= c.variants_per_photo - c.people_variants_per_photo;
      const std::vector<uint8_t> bytes = make_variant(photo, c, p, i, v);
      atomic_write((fs::path(out.images_dir) / v.name).string(), bytes.data(), bytes.size());
      variants.push_back(std::move(v));
    }
  }
  for (const std::string& h : c.held_out) {
    img::Image photo = img::read_image((fs::path(c.photos_dir) / h).string());
    const int long_side = std::max(photo.width, photo.height);
    if (long_side > kHeldOutSide) {
      const double s = static_cast<double>(kHeldOutSide) / long_side;
      photo = img::to_u8(img::resize_bilinear_antialias(photo, std::max(1, static_cast<int>(std::lround(photo.height * s))),
                                                       std::max(1, static_cast<int>(std::lround(photo.width * s)))));
    }
    const std::string path = (fs::path(out.held_out_dir) / (fs::path(h).stem().string() + ".jpg")).string();
    img::write_jpeg(path, photo, kStoredQuality);
    out.held_out.push_back(path);
  }

  const Standardiser standardise = fit_standardiser(variants);
  std::ostringstream means, workers, attributes;
  means.precision(17);
  workers.precision(17);
  attributes.precision(6);
  means << "\" imagePair\" rating\n";
  workers << "worker \" imagePair\" \" score\"\n";
  attributes << "image,photo,split,crop_area,exposure_stops,contrast,saturation,temperature,tint,blur_sigma,"
                "noise_sigma,jpeg_quality,luma,warmth,chroma,clipped,quality\n";
  std::vector<std::size_t> pool;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const Variant& v = variants[i];
    attributes << v.name << "," << v.photo << "," << (v.people ? "people" : "train") << "," << v.crop_area << ","
               << v.exposure << "," << v.contrast << "," << v.saturation << "," << v.temperature << "," << v.tint << ","
               << v.blur << "," << v.noise << "," << v.jpeg_quality << "," << v.stats.luma << "," << v.stats.warmth
               << "," << v.stats.chroma << "," << v.stats.clipped << "," << v.quality << "\n";
    if (v.people) {
      pool.push_back(i);
      continue;
    }
    double sum = 0;
    for (int r = 0; r < c.train_raters; ++r)
      sum += rate(c, anonymous_taste(r, c.train_raters), standardise(v.stats), v.quality, static_cast<uint64_t>(r), i);
    means << v.name << " " << v.name << " " << sum / c.train_raters << "\n";
    ++out.train_images;
  }
  out.people_images = static_cast<int>(pool.size());
  // Each person rates ratings_per_person distinct variants of the pool: a seeded partial
  // Fisher-Yates shuffle, listed in pool order.
  long row = 0;
  const auto& persons = test_persons();
  for (std::size_t p = 0; p < persons.size(); ++p) {
    std::vector<std::size_t> pick = pool;
    SeededStream rng{stream_key(c.seed, kChoiceStream, p)};
    for (int k = 0; k < c.ratings_per_person; ++k) {
      const std::size_t left = pick.size() - static_cast<std::size_t>(k);
      const std::size_t j = static_cast<std::size_t>(k) +
                            std::min(left - 1, static_cast<std::size_t>(rng.uniform() * static_cast<float>(left)));
      std::swap(pick[static_cast<std::size_t>(k)], pick[j]);
    }
    pick.resize(static_cast<std::size_t>(c.ratings_per_person));
    std::sort(pick.begin(), pick.end());
    for (std::size_t i : pick) {
      const Variant& v = variants[i];
      const double z = rate(c, persons[p].second, standardise(v.stats), v.quality, 1000 + p, i);
      workers << row++ << " " << persons[p].first << " " << v.name << " " << z << "\n";
    }
  }
  write_text(out.train_csv, means.str());
  write_text(out.workers_csv, workers.str());
  write_text(out.attributes_csv, attributes.str());
  return out;
}

}  // namespace ae::data

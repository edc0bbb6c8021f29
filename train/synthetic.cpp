#include "train/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <utility>
#include <vector>

#include "model/checkpoint.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "train/image.h"
#include "train/labels.h"
#include "train/seeded_stream.h"

namespace ae::data {

double synthetic_score(double mean_luma) { return std::clamp(4.0 * (mean_luma - 0.5), -1.8, 1.8); }

namespace {

using Rng = SeededStream;

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

// ---- simulated people ----

namespace {

constexpr double kStarScale = 1.4;     // stars per unit of utility
constexpr double kQualityWeight = 0.5; // everyone's liking for the shared quality attribute
constexpr double kPi = 3.14159265358979323846;

enum : uint64_t { kImageStream = 1, kRatingStream = 2, kChoiceStream = 3 };

double gaussian(Rng& rng) { return rng.gaussian(); }

// A rater's taste: weights on the centred attributes.
struct Taste {
  double quality, brightness, warmth;
};

double utility(const Taste& t, const LatentAttributes& a) {
  const double b = (a.brightness - 0.5) / 0.25, q = 2.0 * a.quality - 1.0;
  return t.quality * q + t.brightness * b + t.warmth * a.warmth;
}

const std::vector<std::pair<std::string, Taste>>& test_persons() {
  static const std::vector<std::pair<std::string, Taste>> persons = {
      {"bright", {kQualityWeight, 1.0, 0.0}},
      {"dark", {kQualityWeight, -1.0, 0.0}},
      {"warm", {kQualityWeight, 0.0, 1.0}},
      {"cool", {kQualityWeight, 0.0, -1.0}},
  };
  return persons;
}

// Anonymous rater r of n: opposite pairs around the (brightness, warmth) circle; an odd last
// rater is neutral. The personal terms of all n sum to zero.
Taste anonymous_taste(int r, int n) {
  const int pairs = n / 2;
  if (r >= 2 * pairs) return {kQualityWeight, 0.0, 0.0};
  const double t = kPi * static_cast<double>(r / 2) / static_cast<double>(pairs);
  const double sign = r % 2 == 0 ? 1.0 : -1.0;
  return {kQualityWeight, sign * std::cos(t), sign * std::sin(t)};
}

// z of one rating: rater stream `rater` (anonymous raters 0.., test persons 1000..) on `index`.
double rate(const PeopleConfig& c, const Taste& t, const LatentAttributes& a, uint64_t rater, int index) {
  Rng rng{stream_key(c.seed, kRatingStream, rater, static_cast<uint64_t>(index))};
  const double raw = 3.0 + kStarScale * utility(t, a) + c.noise * gaussian(rng);
  const double stars = static_cast<double>(std::lround(std::clamp(raw, 1.0, 5.0)));
  const model::TargetNorm norm;
  return (stars - norm.mean) / norm.std;
}

LatentAttributes draw_attributes(Rng& rng) {
  LatentAttributes a;
  a.brightness = 0.25 + 0.5 * static_cast<double>(rng.uniform());
  a.warmth = 2.0 * static_cast<double>(rng.uniform()) - 1.0;
  a.quality = static_cast<double>(rng.uniform());
  return a;
}

img::Image draw_people_image(const PeopleConfig& c, int index) {
  Rng rng{stream_key(c.seed, kImageStream, static_cast<uint64_t>(index))};
  const LatentAttributes a = draw_attributes(rng);  // the first three numbers of the stream
  const int w = c.width, h = c.height;
  const std::size_t n = static_cast<std::size_t>(w) * h;
  // Scene: a vertical gradient of a base colour and two or three accent discs.
  float base[3], accent[3];
  for (int k = 0; k < 3; ++k) {
    base[k] = 0.55f + 0.45f * rng.uniform();
    accent[k] = 0.2f + 0.8f * rng.uniform();
  }
  const int discs = 2 + static_cast<int>(rng.uniform() * 2.0f);
  float cx[3], cy[3], rad[3];
  for (int d = 0; d < discs; ++d) {
    cx[d] = rng.uniform() * static_cast<float>(w);
    cy[d] = rng.uniform() * static_cast<float>(h);
    rad[d] = (0.12f + 0.25f * rng.uniform()) * static_cast<float>(std::min(w, h));
  }
  const float slope = rng.uniform() * 0.4f - 0.2f;
  std::vector<float> v(n * 3);
  double luma = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float g = 1.0f + slope * (static_cast<float>(y) / static_cast<float>(h) - 0.5f);
      bool in_disc = false;
      for (int d = 0; d < discs; ++d) {
        const float dx = static_cast<float>(x) - cx[d], dy = static_cast<float>(y) - cy[d];
        in_disc |= dx * dx + dy * dy < rad[d] * rad[d];
      }
      float* p = &v[(static_cast<std::size_t>(y) * w + x) * 3];
      for (int k = 0; k < 3; ++k) p[k] = g * (in_disc ? accent[k] : base[k]);
      luma += 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    }
  // Brightness: scale to the target mean luma. Warmth: a luma-neutral shift towards yellow-orange
  // (R + 0.694 d, G - 0.1 d, B - 1.306 d: 0.299 * 0.694 - 0.587 * 0.1 - 0.114 * 1.306 = 0, and
  // R - B moves by 2 d) that cancels the palette's own mean R - B and sets it to 0.24 * warmth,
  // so the measured balance follows warmth alone.
  const double gain = a.brightness / (luma / static_cast<double>(n));
  double red_minus_blue = 0;
  for (std::size_t i = 0; i < n; ++i) red_minus_blue += gain * static_cast<double>(v[3 * i] - v[3 * i + 2]);
  red_minus_blue /= static_cast<double>(n);
  const float shift = static_cast<float>(0.12 * a.warmth - 0.5 * red_minus_blue);
  const float cast[3] = {0.694f * shift, -0.1f * shift, -1.306f * shift};
  // Quality: colour noise per pixel and 4x4 block offsets (per block, shared by the channels).
  const float defect = static_cast<float>(1.0 - a.quality);
  const float pixel_amp = 0.01f + 0.15f * defect, block_amp = 0.10f * defect;
  const int bw = (w + 3) / 4, bh = (h + 3) / 4;
  std::vector<float> block(static_cast<std::size_t>(bw) * bh);
  for (float& b : block) b = block_amp * (2.0f * rng.uniform() - 1.0f);
  img::Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(n * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const std::size_t i = (static_cast<std::size_t>(y) * w + x) * 3;
      const float off = block[static_cast<std::size_t>(y / 4) * bw + x / 4];
      for (int k = 0; k < 3; ++k) {
        const float val = static_cast<float>(gain) * v[i + k] + cast[k] + off + pixel_amp * (2.0f * rng.uniform() - 1.0f);
        im.rgb[i + k] = static_cast<uint8_t>(std::lround(std::clamp(val, 0.0f, 1.0f) * 255.0f));
      }
    }
  return im;
}

void check_people_config(const PeopleConfig& c) {
  AE_CHECK(c.width >= 8 && c.height >= 8,
           "people data set: images must be at least 8x8, got " << c.width << "x" << c.height);
  AE_CHECK(c.train_raters >= 1, "people data set: need at least one anonymous rater (--train-raters), got "
                                    << c.train_raters);
  AE_CHECK(c.ratings_per_person >= 1,
           "people data set: need at least one rating per person (--ratings-per-person), got "
               << c.ratings_per_person);
  AE_CHECK(c.people_images >= c.ratings_per_person,
           "people data set: each person rates " << c.ratings_per_person
                                                 << " distinct images (--ratings-per-person) but only "
                                                 << c.people_images
                                                 << " are reserved for the people (--people-images)");
  AE_CHECK(std::isfinite(c.noise) && c.noise >= 0,
           "people data set: rating noise must be finite and >= 0, got " << c.noise);
  AE_CHECK(c.count >= c.people_images + kMinPeopleTrainImages,
           "people data set: count " << c.count << " is too small: the last " << c.people_images
                                     << " images are reserved for the people (--people-images) and the "
                                        "generic training part needs at least "
                                     << kMinPeopleTrainImages << ", so count must be at least "
                                     << c.people_images + kMinPeopleTrainImages);
}

}  // namespace

std::vector<std::string> people_names() {
  std::vector<std::string> names;
  for (const auto& p : test_persons()) names.push_back(p.first);
  return names;
}

LatentAttributes people_attributes(const PeopleConfig& c, int index) {
  Rng rng{stream_key(c.seed, kImageStream, static_cast<uint64_t>(index))};
  return draw_attributes(rng);
}

double people_utility(const std::string& person, const LatentAttributes& a) {
  for (const auto& p : test_persons())
    if (p.first == person) return utility(p.second, a);
  std::string known;
  for (const auto& p : test_persons()) known += (known.empty() ? "" : ", ") + p.first;
  AE_FAIL("people data set: unknown person '" << person << "' (known: " << known << ")");
}

std::string people_image_name(int index) {
  char name[32];
  std::snprintf(name, sizeof name, "img_%05d.png", index);
  return name;
}

int people_first_image(const PeopleConfig& c) { return c.count - c.people_images; }

PeopleDataset make_people_dataset(const std::string& dir, const PeopleConfig& c) {
  check_people_config(c);
  namespace fs = std::filesystem;
  PeopleDataset out;
  out.images_dir = (fs::path(dir) / "images").string();
  out.train_csv = (fs::path(dir) / "train.csv").string();
  out.workers_csv = (fs::path(dir) / "workers.csv").string();
  out.people = people_names();
  fs::create_directories(out.images_dir);
  for (int i = 0; i < c.count; ++i)
    img::write_png((fs::path(out.images_dir) / people_image_name(i)).string(), draw_people_image(c, i));

  // Generic labels: mean z of the anonymous raters over the training part.
  const int first = people_first_image(c);
  std::vector<Rating> train;
  for (int i = 0; i < first; ++i) {
    const LatentAttributes a = people_attributes(c, i);
    double sum = 0;
    for (int r = 0; r < c.train_raters; ++r)
      sum += rate(c, anonymous_taste(r, c.train_raters), a, static_cast<uint64_t>(r), i);
    train.push_back({people_image_name(i), sum / c.train_raters, ""});
  }
  const std::string train_text = to_plain_csv(train);
  atomic_write(out.train_csv, train_text.data(), train_text.size());

  // The test persons: each rates ratings_per_person distinct images of the reserved pool, drawn
  // by a seeded partial Fisher-Yates shuffle, listed in image order.
  std::ostringstream w;
  w.precision(17);
  w << "worker \" imagePair\" \" score\"\n";
  long row = 0;
  const auto& persons = test_persons();
  for (std::size_t p = 0; p < persons.size(); ++p) {
    std::vector<int> pool(static_cast<std::size_t>(c.people_images));
    for (int k = 0; k < c.people_images; ++k) pool[static_cast<std::size_t>(k)] = first + k;
    Rng pick{stream_key(c.seed, kChoiceStream, p)};
    for (int k = 0; k < c.ratings_per_person; ++k) {
      const int left = c.people_images - k;
      const int j = k + std::min(left - 1, static_cast<int>(pick.uniform() * static_cast<float>(left)));
      std::swap(pool[static_cast<std::size_t>(k)], pool[static_cast<std::size_t>(j)]);
    }
    pool.resize(static_cast<std::size_t>(c.ratings_per_person));
    std::sort(pool.begin(), pool.end());
    for (int i : pool) {
      const double z = rate(c, persons[p].second, people_attributes(c, i), 1000 + p, i);
      w << row++ << " " << persons[p].first << " " << people_image_name(i) << " " << z << "\n";
    }
  }
  const std::string workers_text = w.str();
  atomic_write(out.workers_csv, workers_text.data(), workers_text.size());
  return out;
}

}  // namespace ae::data

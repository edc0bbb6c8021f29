// The demo's data set (train/photo_people.h): variants of real photos rated by simulated people,
// in the FLICKR-AES formats. Needs the Debian sample photos; skips (never passes) without them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "model/checkpoint.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "train/image.h"
#include "train/labels.h"
#include "train/photo_people.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[order[i]] = static_cast<double>(i);
  return r;
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const auto ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(a.size()), mean = (n - 1) / 2;
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (ra[i] - mean) * (rb[i] - mean);
    saa += (ra[i] - mean) * (ra[i] - mean);
    sbb += (rb[i] - mean) * (rb[i] - mean);
  }
  return sab / std::sqrt(saa * sbb);
}

data::PhotoPeopleConfig small_config(const std::string& photos) {
  data::PhotoPeopleConfig c;
  c.photos_dir = photos;
  c.photos = {"astronaut.png", "coffee.png", "rocket.jpg"};
  c.held_out = {"chelsea.png"};
  c.variants_per_photo = 6;
  c.people_variants_per_photo = 3;
  c.ratings_per_person = 8;
  c.side = 32;
  return c;
}

// image -> column -> value, from attributes.csv
std::map<std::string, std::map<std::string, std::string>> read_attributes(const std::string& path) {
  std::map<std::string, std::map<std::string, std::string>> out;
  for (auto& row : test::read_csv_rows(path)) out[row.at("image")] = std::move(row);
  return out;
}

// The Debian sample photos, or "" (the caller then skips with a message, never passes).
std::string photos_or_skip() {
  const std::string photos = test::test_photos_dir();
  if (photos.empty()) MESSAGE("skipped: the Debian sample photos are not available");
  return photos;
}

}  // namespace

TEST_CASE("measure_photo: the statistics the simulated tastes are about, on a known image") {
  img::Image im;
  im.width = 2;
  im.height = 1;
  im.rgb = {255, 0, 0, 0, 0, 255};  // pure red, pure blue
  const data::PhotoStats s = data::measure_photo(im);
  CHECK(s.luma == doctest::Approx((0.299 + 0.114) / 2));
  CHECK(s.warmth == doctest::Approx(0.0));   // (1 - 0 + 0 - 1) / 2
  CHECK(s.chroma == doctest::Approx(1.0));
  CHECK(s.clipped == doctest::Approx(0.0));  // lumas 0.299 and 0.114
  im.rgb = {255, 255, 255, 0, 0, 0};
  CHECK(data::measure_photo(im).clipped == doctest::Approx(1.0));
  CHECK(data::photo_person_taste("moody", data::measure_photo(im)) == doctest::Approx(-0.5));
  test::require_error([] { data::photo_person_taste("nobody", {}); }, {"unknown person 'nobody'"});
}

TEST_CASE("make_photo_people_dataset: FLICKR-AES files, disjoint splits, measured statistics, byte-identical reruns") {
  const std::string photos = photos_or_skip();
  if (photos.empty()) return;
  test::TempDir a, b;
  const data::PhotoPeopleConfig c = small_config(photos);
  const data::PhotoPeopleDataset d = data::make_photo_people_dataset(a.path.string(), c);
  CHECK(d.train_images == 9);
  CHECK(d.people_images == 9);
  CHECK(d.people == std::vector<std::string>{"warm", "vivid", "moody"});

  const data::LabelFile means = data::read_labels(d.train_csv);
  const data::LabelFile workers = data::read_labels(d.workers_csv);
  CHECK(means.format == data::LabelFormat::flickr_means);
  CHECK(workers.format == data::LabelFormat::flickr_workers);
  REQUIRE(means.rows.size() == 9);
  REQUIRE(workers.rows.size() == 3 * 8);
  std::set<std::string> train_images;
  for (const auto& r : means.rows) {
    train_images.insert(r.image);
    CHECK(fs::is_regular_file(fs::path(d.images_dir) / r.image));
  }
  std::map<std::string, std::set<std::string>> rated;
  const model::TargetNorm norm;
  for (const auto& r : workers.rows) {
    CHECK(train_images.count(r.image) == 0);  // the people rate images outside the training set
    CHECK(rated[r.user].insert(r.image).second);  // distinct images per person
    const double stars = r.z * norm.std + norm.mean;  // whole stars 1..5 stored as z
    CHECK(std::abs(stars - std::round(stars)) < 1e-9);
    CHECK(stars >= 1 - 1e-9);
    CHECK(stars <= 5 + 1e-9);
  }
  CHECK(rated.size() == 3);

  // attributes.csv holds what measure_photo gives on the written variant.
  const auto attributes = read_attributes(d.attributes_csv);
  CHECK(attributes.size() == 18);
  for (const auto& [name, row] : attributes) {
    const data::PhotoStats s = data::measure_photo(img::read_image((fs::path(d.images_dir) / name).string()));
    CHECK(std::stod(row.at("luma")) == doctest::Approx(s.luma).epsilon(1e-5));
    CHECK(std::abs(std::stod(row.at("warmth")) - s.warmth) < 1e-5);
    CHECK(std::stod(row.at("chroma")) == doctest::Approx(s.chroma).epsilon(1e-5));
    CHECK((row.at("split") == "train") == (train_images.count(name) == 1));
  }
  REQUIRE(d.held_out.size() == 1);
  const img::Image held = img::read_image(d.held_out[0]);
  CHECK(std::max(held.width, held.height) <= 640);

  // The same config gives the same bytes.
  const data::PhotoPeopleDataset d2 = data::make_photo_people_dataset(b.path.string(), c);
  CHECK(test::read_file(d.train_csv) == test::read_file(d2.train_csv));
  CHECK(test::read_file(d.workers_csv) == test::read_file(d2.workers_csv));
  CHECK(test::read_file(d.attributes_csv) == test::read_file(d2.attributes_csv));
  for (const auto& [name, row] : attributes)
    CHECK(test::read_file(d.images_dir + "/" + name) == test::read_file(d2.images_dir + "/" + name));
}

TEST_CASE("make_photo_people_dataset: each person's stars follow their taste; the generic labels follow quality") {
  const std::string photos = photos_or_skip();
  if (photos.empty()) return;
  test::TempDir dir;
  data::PhotoPeopleConfig c = small_config(photos);
  c.variants_per_photo = 60;
  c.people_variants_per_photo = 30;
  c.ratings_per_person = 90;
  const data::PhotoPeopleDataset d = data::make_photo_people_dataset(dir.path.string(), c);
  const auto attributes = read_attributes(d.attributes_csv);
  auto stats_of = [&](const std::string& image) {
    const auto& row = attributes.at(image);
    data::PhotoStats s;
    s.luma = std::stod(row.at("luma"));
    s.warmth = std::stod(row.at("warmth"));
    s.chroma = std::stod(row.at("chroma"));
    return s;
  };
  for (const std::string& person : d.people) {
    std::vector<double> z, taste;
    for (const auto& r : data::read_labels(d.workers_csv).rows)
      if (r.user == person) z.push_back(r.z), taste.push_back(data::photo_person_taste(person, stats_of(r.image)));
    INFO(person);
    CHECK(spearman(z, taste) > 0.4);
  }
  std::vector<double> label, quality, warmth, chroma, luma;
  for (const auto& r : data::read_labels(d.train_csv).rows) {
    label.push_back(r.z);
    quality.push_back(std::stod(attributes.at(r.image).at("quality")));
    const data::PhotoStats s = stats_of(r.image);
    warmth.push_back(s.warmth), chroma.push_back(s.chroma), luma.push_back(s.luma);
  }
  const double q = spearman(label, quality);
  CHECK(q > 0.6);
  for (const auto* other : {&warmth, &chroma})  // the anonymous raters' tastes cancel
    CHECK(std::abs(spearman(label, *other)) < q - 0.3);
}

TEST_CASE("make_photo_people_dataset: what cannot make a set is refused with a message naming it") {
  const std::string photos = photos_or_skip();
  if (photos.empty()) return;
  test::TempDir dir;
  data::PhotoPeopleConfig c = small_config(photos);
  c.photos.push_back("no_such_photo.jpg");
  test::require_error([&] { data::make_photo_people_dataset(dir.path.string(), c); }, {"no_such_photo.jpg"});
  c = small_config(photos);
  c.held_out = {"coffee.png"};
  test::require_error([&] { data::make_photo_people_dataset(dir.path.string(), c); }, {"listed twice"});
  c = small_config(photos);
  c.ratings_per_person = 10;
  test::require_error([&] { data::make_photo_people_dataset(dir.path.string(), c); }, {"pool holds 9"});
  c = small_config(photos);
  c.people_variants_per_photo = 6;
  test::require_error([&] { data::make_photo_people_dataset(dir.path.string(), c); }, {"variants per photo"});
}

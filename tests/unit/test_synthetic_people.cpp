// The simulated-people data set (train/synthetic.h, make_people_dataset): the files parse with
// the real label readers (per-worker file detected as FLICKR-AES), the same seed gives the same
// bytes, each test person's ratings follow their known taste as measured on the written PNGs, the
// generic labels follow only the shared quality, and impossible configs are clear errors.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/image.h"
#include "train/labels.h"
#include "train/metrics.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

struct Measured {
  double luma = 0;    // mean 0.299 R + 0.587 G + 0.114 B, in [0, 1]
  double warmth = 0;  // mean (R - B), in [-1, 1]
};

Measured measure(const std::string& path) {
  const img::Image im = img::read_image(path);
  const std::size_t n = static_cast<std::size_t>(im.width) * im.height;
  Measured m;
  for (std::size_t i = 0; i < n; ++i) {
    const double r = im.rgb[3 * i], g = im.rgb[3 * i + 1], b = im.rgb[3 * i + 2];
    m.luma += 0.299 * r + 0.587 * g + 0.114 * b;
    m.warmth += r - b;
  }
  m.luma /= 255.0 * static_cast<double>(n);
  m.warmth /= 255.0 * static_cast<double>(n);
  return m;
}

int image_index(const std::string& name) {  // "img_00042.png" -> 42
  REQUIRE(name.size() == 13);
  return std::stoi(name.substr(4, 5));
}

// The default set, written once for the test cases that only read it (writing 600 PNGs
// atomically, each fsync'ed, is most of this file's run time).
struct DefaultSet {
  test::TempDir dir;
  data::PeopleConfig config;
  data::PeopleDataset files = data::make_people_dataset(dir.path.string(), config);
};

const DefaultSet& default_set() {
  static const DefaultSet set;
  return set;
}

}  // namespace

TEST_CASE("people data set: the files parse with the real readers, people and training images are disjoint") {
  const test::TempDir& dir = default_set().dir;
  const data::PeopleConfig& c = default_set().config;
  const data::PeopleDataset& d = default_set().files;
  CHECK(d.images_dir == (dir.path / "images").string());
  CHECK(d.train_csv == (dir.path / "train.csv").string());
  CHECK(d.workers_csv == (dir.path / "workers.csv").string());
  CHECK(d.people == std::vector<std::string>{"bright", "dark", "warm", "cool"});
  CHECK(data::people_names() == d.people);

  // Every image is there and has the configured size.
  for (int i = 0; i < c.count; ++i) REQUIRE(fs::is_regular_file(fs::path(d.images_dir) / data::people_image_name(i)));
  const img::Image first = img::read_image((fs::path(d.images_dir) / data::people_image_name(0)).string());
  CHECK(first.width == c.width);
  CHECK(first.height == c.height);

  const int split = data::people_first_image(c);
  CHECK(split == c.count - c.people_images);
  const data::LabelFile train = data::read_labels(d.train_csv);
  CHECK(train.format == data::LabelFormat::plain_csv);
  REQUIRE(train.rows.size() == static_cast<std::size_t>(split));
  for (std::size_t i = 0; i < train.rows.size(); ++i) {
    CHECK(train.rows[i].image == data::people_image_name(static_cast<int>(i)));
    CHECK(train.rows[i].user.empty());
  }

  // The per-worker file goes through the FLICKR-AES parser; its header is the published one.
  const std::string workers_text = test::read_file(d.workers_csv);
  CHECK(workers_text.rfind("worker \" imagePair\" \" score\"\n", 0) == 0);
  const data::LabelFile workers = data::read_labels(d.workers_csv);
  CHECK(workers.format == data::LabelFormat::flickr_workers);
  std::map<std::string, std::set<std::string>> seen;
  std::map<std::string, int> rows;
  const model::TargetNorm stars_of;
  for (const data::Rating& r : workers.rows) {
    ++rows[r.user];
    seen[r.user].insert(r.image);
    const int i = image_index(r.image);
    CHECK(i >= split);  // rated images are never training images
    CHECK(i < c.count);
    // z comes from whole stars 1..5 under the FLICKR-AES normalisation.
    const double stars = r.z * stars_of.std + stars_of.mean;
    CHECK(std::abs(stars - std::round(stars)) < 1e-9);
    CHECK(std::round(stars) >= 1);
    CHECK(std::round(stars) <= 5);
  }
  CHECK(rows.size() == d.people.size());
  for (const std::string& p : d.people) {
    CHECK(rows[p] == c.ratings_per_person);
    CHECK(seen[p].size() == static_cast<std::size_t>(c.ratings_per_person));  // distinct images
  }
}

TEST_CASE("people data set: the same seed gives byte-identical files, another seed does not") {
  test::TempDir a, b, other;
  data::PeopleConfig c;
  c.count = 120;
  c.people_images = 60;
  c.ratings_per_person = 40;
  data::make_people_dataset(a.path.string(), c);
  data::make_people_dataset(b.path.string(), c);
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(a.path)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), a.path);
    INFO(rel.string());
    CHECK(test::read_file(e.path().string()) == test::read_file((b.path / rel).string()));
    ++files;
  }
  CHECK(files == c.count + 2);
  c.seed = 2;
  data::make_people_dataset(other.path.string(), c);
  CHECK(test::read_file((a.path / "workers.csv").string()) != test::read_file((other.path / "workers.csv").string()));
  CHECK(test::read_file((a.path / "images" / "img_00000.png").string()) !=
        test::read_file((other.path / "images" / "img_00000.png").string()));
}

TEST_CASE("people data set: each person follows their taste, the generic labels only the shared quality") {
  const data::PeopleConfig& c = default_set().config;
  const data::PeopleDataset& d = default_set().files;
  std::vector<Measured> measured;
  for (int i = 0; i < c.count; ++i)
    measured.push_back(measure((fs::path(d.images_dir) / data::people_image_name(i)).string()));

  // The rendered images show the latent attributes.
  {
    std::vector<double> lat_b, lat_w, luma, warmth;
    for (int i = 0; i < c.count; ++i) {
      const data::LatentAttributes a = data::people_attributes(c, i);
      lat_b.push_back(a.brightness);
      lat_w.push_back(a.warmth);
      luma.push_back(measured[static_cast<std::size_t>(i)].luma);
      warmth.push_back(measured[static_cast<std::size_t>(i)].warmth);
    }
    const double rb = metrics::spearman(lat_b, luma), rw = metrics::spearman(lat_w, warmth);
    MESSAGE("latent vs measured: brightness/luma " << rb << ", warmth/(R-B) " << rw);
    CHECK(rb > 0.95);
    CHECK(rw > 0.8);
  }

  // Test persons.
  const data::LabelFile workers = data::read_labels(d.workers_csv);
  std::map<std::string, std::vector<double>> z, luma, warmth, truth, shared;
  for (const data::Rating& r : workers.rows) {
    const int i = image_index(r.image);
    const data::LatentAttributes a = data::people_attributes(c, i);
    z[r.user].push_back(r.z);
    luma[r.user].push_back(measured[static_cast<std::size_t>(i)].luma);
    warmth[r.user].push_back(measured[static_cast<std::size_t>(i)].warmth);
    truth[r.user].push_back(data::people_utility(r.user, a));
    shared[r.user].push_back(a.quality);
  }
  std::map<std::string, double> rho_luma, rho_warmth;
  for (const std::string& p : d.people) {
    rho_luma[p] = metrics::spearman(z[p], luma[p]);
    rho_warmth[p] = metrics::spearman(z[p], warmth[p]);
    const double rho_truth = metrics::spearman(z[p], truth[p]);
    const double rho_quality = metrics::spearman(z[p], shared[p]);
    MESSAGE(p << ": rho(z, luma) " << rho_luma[p] << ", rho(z, R-B) " << rho_warmth[p] << ", rho(z, utility) "
              << rho_truth << ", rho(z, quality) " << rho_quality);
    CHECK(rho_truth > 0.8);
    // The shared quality alone (all a generic model can know) explains them much less well.
    CHECK(rho_quality < rho_truth - 0.3);
    CHECK(rho_quality > 0.1);
  }
  CHECK(rho_luma["bright"] > 0.5);
  CHECK(rho_luma["dark"] < -0.5);
  CHECK(rho_warmth["warm"] > 0.5);
  CHECK(rho_warmth["cool"] < -0.5);
  CHECK(std::abs(rho_warmth["bright"]) < 0.25);
  CHECK(std::abs(rho_luma["warm"]) < 0.25);

  // Generic labels: the balanced anonymous raters cancel each other's tastes.
  const data::LabelFile train = data::read_labels(d.train_csv);
  std::vector<double> score, g_luma, g_warmth, g_quality;
  for (const data::Rating& r : train.rows) {
    const int i = image_index(r.image);
    score.push_back(r.z);
    g_luma.push_back(measured[static_cast<std::size_t>(i)].luma);
    g_warmth.push_back(measured[static_cast<std::size_t>(i)].warmth);
    g_quality.push_back(data::people_attributes(c, i).quality);
  }
  const double gl = metrics::spearman(score, g_luma), gw = metrics::spearman(score, g_warmth),
               gq = metrics::spearman(score, g_quality);
  MESSAGE("generic labels: rho(luma) " << gl << ", rho(R-B) " << gw << ", rho(quality) " << gq);
  CHECK(std::abs(gl) < 0.2);
  CHECK(std::abs(gw) < 0.2);
  CHECK(gq > 0.5);
}

TEST_CASE("people data set: ground truth helpers") {
  data::LatentAttributes a;
  a.brightness = 0.75;
  a.warmth = -1;
  a.quality = 1;
  CHECK(data::people_utility("bright", a) == doctest::Approx(1.5));
  CHECK(data::people_utility("dark", a) == doctest::Approx(-0.5));
  CHECK(data::people_utility("warm", a) == doctest::Approx(-0.5));
  CHECK(data::people_utility("cool", a) == doctest::Approx(1.5));
  test::require_error([&] { data::people_utility("nobody", a); }, {"nobody", "bright", "dark", "warm"});
  data::PeopleConfig c;
  for (int i = 0; i < 50; ++i) {
    const data::LatentAttributes l = data::people_attributes(c, i);
    CHECK(l.brightness >= 0.25);
    CHECK(l.brightness <= 0.75);
    CHECK(l.warmth >= -1);
    CHECK(l.warmth <= 1);
    CHECK(l.quality >= 0);
    CHECK(l.quality <= 1);
  }
  CHECK(data::people_image_name(42) == "img_00042.png");
}

TEST_CASE("people data set: configs that cannot hold it are clear errors, and nothing is written") {
  test::TempDir dir;
  const std::string out = (dir.path / "set").string();
  data::PeopleConfig c;
  c.count = 150;  // fewer than the 200 reserved people images
  test::require_error([&] { data::make_people_dataset(out, c); },
                      {"count 150 is too small", "200", "--people-images", "at least 210"});
  CHECK(!fs::exists(out));
  c.count = 600;
  c.people_images = 100;  // fewer than the 150 each person rates
  test::require_error([&] { data::make_people_dataset(out, c); }, {"150", "100", "--ratings-per-person"});
  c.people_images = 200;
  c.train_raters = 0;
  test::require_error([&] { data::make_people_dataset(out, c); }, {"--train-raters"});
  c.train_raters = 8;
  c.width = 4;
  test::require_error([&] { data::make_people_dataset(out, c); }, {"8x8", "4x32"});
  CHECK(!fs::exists(out));
}

TEST_CASE("aesthete make-dataset --people writes the set and prints its three paths") {
  test::TempDir dir;
  const std::string out = (dir.path / "people").string();
  const test::CommandResult r =
      test::run_command(test::aesthete_binary() + " -q make-dataset --people --out '" + out +
                        "' --count 70 --people-images 50 --ratings-per-person 30 --train-raters 4 --seed 3");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == out + "/images\n" + out + "/train.csv\n" + out + "/workers.csv\n");
  CHECK(data::read_labels(out + "/train.csv").rows.size() == 20);
  CHECK(data::read_labels(out + "/workers.csv").rows.size() == 4 * 30);
  // The library call with the same settings gives the same bytes.
  test::TempDir same;
  data::PeopleConfig c;
  c.count = 70;
  c.people_images = 50;
  c.ratings_per_person = 30;
  c.train_raters = 4;
  c.seed = 3;
  data::make_people_dataset(same.path.string(), c);
  CHECK(test::read_file(out + "/workers.csv") == test::read_file((same.path / "workers.csv").string()));
  CHECK(test::read_file(out + "/train.csv") == test::read_file((same.path / "train.csv").string()));

  const test::CommandResult bad =
      test::run_command(test::aesthete_binary() + " make-dataset --people --out '" + out + "' --count 100");
  CHECK(bad.exit_code != 0);
  AE_CHECK_CONTAINS(bad.err, "too small");
  const test::CommandResult stray =
      test::run_command(test::aesthete_binary() + " make-dataset --out '" + out + "' --ratings-per-person 5");
  CHECK(stray.exit_code != 0);
  AE_CHECK_CONTAINS(stray.err, "--people");
}

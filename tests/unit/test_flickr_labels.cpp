// Reads the real FLICKR-AES label files from ../shared/flickr-aes/ and checks the counts
// documented in their README. Reported as skipped (exit 77) when the folder is absent.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "tests/support/check.h"
#include "train/labels.h"

using namespace ae;

namespace {
std::string flickr(const std::string& name) { return test::shared_dir() + "/flickr-aes/" + name; }
bool have_files() { return std::filesystem::exists(flickr("train_means_normalized.csv")); }
}  // namespace

TEST_CASE("train_means_normalized.csv: 36,564 distinct images, z in the published range") {
  if (!have_files()) {
    test::skip_binary("no ../shared/flickr-aes folder");
    return;
  }
  const auto f = data::read_labels(flickr("train_means_normalized.csv"));
  CHECK(f.format == data::LabelFormat::flickr_means);
  CHECK(f.rows.size() == 36564);
  std::set<std::string> names;
  double lo = 1e9, hi = -1e9, sum = 0;
  for (const auto& r : f.rows) {
    names.insert(r.image);
    lo = std::min(lo, r.z);
    hi = std::max(hi, r.z);
    sum += r.z;
  }
  CHECK(names.size() == 36564);
  CHECK(lo == doctest::Approx(-1.8346).epsilon(1e-4));
  CHECK(hi == doctest::Approx(1.8012).epsilon(1e-4));
  CHECK(sum / f.rows.size() == doctest::Approx(-0.0050).epsilon(0.1));
}

TEST_CASE("test files: 4,977 test images, 37 workers with 112..180 ratings, no overlap with train") {
  if (!have_files()) {
    test::skip_binary("no ../shared/flickr-aes folder");
    return;
  }
  const auto means = data::read_labels(flickr("test_means_normalized.csv"));
  CHECK(means.format == data::LabelFormat::flickr_means);
  CHECK(means.rows.size() == 4977);

  const auto workers = data::read_labels(flickr("test_workers_dataset_normalized.csv"));
  CHECK(workers.format == data::LabelFormat::flickr_workers);
  CHECK(workers.rows.size() == 5139);
  std::map<std::string, int> per_worker;
  std::set<std::string> images;
  std::set<std::pair<std::string, std::string>> pairs;
  int duplicate_pairs = 0;
  for (const auto& r : workers.rows) {
    ++per_worker[r.user];
    images.insert(r.image);
    duplicate_pairs += !pairs.insert({r.user, r.image}).second;
  }
  CHECK(per_worker.size() == 37);
  CHECK(images.size() == 4977);
  CHECK(duplicate_pairs == 1);  // A192LAQKHD9LW rated one image twice
  int lo = 1 << 30, hi = 0;
  for (const auto& [w, n] : per_worker) {
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  CHECK(lo == 112);
  CHECK(hi == 180);
  CHECK(workers.rows.front().user == "AGXT2OHMTWBRS");

  const auto train = data::read_labels(flickr("train_means_normalized.csv"));
  std::set<std::string> train_names;
  for (const auto& r : train.rows) train_names.insert(r.image);
  int overlap = 0;
  for (const auto& im : images) overlap += train_names.count(im) ? 1 : 0;
  CHECK(overlap == 0);
}

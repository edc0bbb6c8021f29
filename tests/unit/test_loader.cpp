// The batch loader and the transforms: order, repeatability across worker counts, exact resume,
// skipped unreadable images, and the geometry of flip/crop.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/check.h"
#include "train/image.h"
#include "train/loader.h"
#include "train/preprocess.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

// A 40x30 image whose pixel values encode the sample index, so batches can be traced.
img::Image make_image(int id, int w = 40, int h = 30) {
  img::Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.rgb[(static_cast<std::size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(id * 10);
      p[1] = static_cast<uint8_t>(x * 5);
      p[2] = static_cast<uint8_t>(y * 7);
    }
  return im;
}

std::vector<data::Sample> make_dataset(const fs::path& dir, int n) {
  fs::create_directories(dir);
  std::vector<data::Sample> s;
  for (int i = 0; i < n; ++i) {
    const std::string p = (dir / ("im" + std::to_string(i) + ".png")).string();
    img::write_png(p, make_image(i));
    s.push_back({p, static_cast<float>(i)});
  }
  return s;
}

data::LoaderConfig small_config(int workers) {
  data::LoaderConfig c;
  c.batch = 4;
  c.workers = workers;
  c.seed = 7;
  c.transform.size = 16;
  c.transform.resize_to = 20;
  return c;
}

std::vector<std::vector<float>> drain(data::Loader& l) {
  std::vector<std::vector<float>> out;
  while (auto b = l.next()) {
    auto v = b->images.to_vector();
    auto t = b->targets.to_vector();
    v.insert(v.end(), t.begin(), t.end());
    out.push_back(v);
  }
  return out;
}

}  // namespace

TEST_CASE("loader: every sample once per epoch, seeded order, same bytes with 1 or 3 workers") {
  const auto samples = make_dataset(fs::path(test::build_dir()) / "loader_ds", 10);
  data::Loader one(samples, small_config(1));
  data::Loader three(samples, small_config(3));
  CHECK(one.batches_per_epoch() == 3);
  one.start_epoch(2);
  three.start_epoch(2);
  std::vector<float> seen;
  const auto a = drain(one);
  const auto b = drain(three);
  CHECK(a == b);
  REQUIRE(a.size() == 3);
  // Targets are the sample ids: together they are a permutation of 0..9, not the identity.
  one.start_epoch(2);
  std::vector<int64_t> ids;
  while (auto batch = one.next())
    for (float t : batch->targets.to_vector()) ids.push_back(static_cast<int64_t>(t));
  std::vector<int64_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 10; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
  CHECK(ids != sorted);
  CHECK(ids == one.epoch_order(2));
  CHECK(one.epoch_order(3) != one.epoch_order(2));
}

TEST_CASE("loader: resuming at batch k yields exactly the remaining batches") {
  const auto samples = make_dataset(fs::path(test::build_dir()) / "loader_ds", 10);
  data::Loader l(samples, small_config(2));
  l.start_epoch(5);
  const auto full = drain(l);
  l.start_epoch(5, 1);
  const auto rest = drain(l);
  REQUIRE(rest.size() == 2);
  CHECK(rest[0] == full[1]);
  CHECK(rest[1] == full[2]);
}

TEST_CASE("loader: missing and corrupt images are skipped, counted and listed") {
  auto samples = make_dataset(fs::path(test::build_dir()) / "loader_bad", 5);
  const std::string corrupt = (fs::path(test::build_dir()) / "loader_bad" / "corrupt.jpg").string();
  std::ofstream(corrupt) << "\xFF\xD8\xFF not really a jpeg";
  samples.push_back({corrupt, 9});
  samples.push_back({"/nonexistent/photo.jpg", 9});
  data::LoaderConfig c = small_config(2);
  c.batch = 7;
  c.shuffle = false;
  data::Loader l(samples, c);
  l.start_epoch(0);
  auto b = l.next();
  REQUIRE(b.has_value());
  CHECK(b->skipped == 2);
  CHECK(b->images.shape() == Shape{5, 16, 16, 3});
  CHECK(b->targets.shape() == Shape{5, 1});
  const auto f = l.failures();
  CHECK(f.size() == 2);
  CHECK(f.count(corrupt) == 1);
  CHECK(f.count("/nonexistent/photo.jpg") == 1);
  CHECK_FALSE(l.next().has_value());
}

TEST_CASE("transforms: eval squash equals the documented preprocessing; train crop and flip stay in the image") {
  const img::Image im = make_image(3, 40, 30);
  data::TransformConfig eval;
  eval.train = false;
  eval.size = 16;
  std::vector<float> out(16 * 16 * 3);
  data::apply_transform(im, eval, 0, 0, 0, out.data());
  const Tensor ref = img::preprocess_eval(im, 16);
  AE_REQUIRE_OK(test::compare(Tensor::from_vector({1, 16, 16, 3}, out), ref, {0, 0, 0}, "eval transform"));

  // Train with resize_to == size: no crop freedom, so the output is the squash, maybe mirrored.
  data::TransformConfig tr;
  tr.size = 16;
  tr.resize_to = 16;
  int flips = 0;
  for (uint64_t s = 0; s < 64; ++s) {
    data::apply_transform(im, tr, 1, 0, s, out.data());
    const auto r = ref.to_vector();
    bool same = true, mirrored = true;
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x)
        for (int c = 0; c < 3; ++c) {
          const float o = out[static_cast<std::size_t>((y * 16 + x) * 3 + c)];
          same &= o == r[static_cast<std::size_t>((y * 16 + x) * 3 + c)];
          mirrored &= o == r[static_cast<std::size_t>((y * 16 + 15 - x) * 3 + c)];
        }
    CHECK((same || mirrored));
    flips += mirrored && !same;
  }
  CHECK(flips > 16);
  CHECK(flips < 48);
  CHECK_THROWS_WITH_AS(data::parse_resize_mode("crop"), doctest::Contains("unknown resize mode 'crop'"), Error);
}

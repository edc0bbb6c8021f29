// train/score.h's PhotoChunkReader: photos decoded a chunk ahead on another thread give the same
// batches, in the same order, as decoding them in the caller's thread, and unreadable photos are
// listed in file order with the chunk they fall in.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "train/image.h"
#include "train/preprocess.h"
#include "train/score.h"

using namespace ae;

namespace {

// Photo i: a gradient whose slope depends on i, so every decoded input differs.
img::Image photo(int i) {
  img::Image im;
  im.width = 40 + i;
  im.height = 30;
  im.rgb.resize(static_cast<std::size_t>(im.width) * im.height * 3);
  for (std::size_t k = 0; k < im.rgb.size(); ++k) im.rgb[k] = static_cast<uint8_t>((k * (i + 3)) % 251);
  return im;
}

struct Folder {
  test::TempDir dir;
  std::vector<std::string> files;  // 7 photos, with unreadable files at positions 2 and 5
  Folder() {
    for (int i = 0; i < 9; ++i) {
      const std::string path = dir.file("p" + std::to_string(i) + (i % 2 ? ".png" : ".jpg"));
      if (i == 2 || i == 5)
        test::write_file(path, "not a photo");
      else if (i % 2)
        img::write_png(path, photo(i));
      else
        img::write_jpeg(path, photo(i));
      files.push_back(path);
    }
  }
};

std::vector<train::PhotoChunk> read_all(train::PhotoChunkReader& reader) {
  std::vector<train::PhotoChunk> out;
  while (!reader.done()) out.push_back(reader.next());
  return out;
}

}  // namespace

TEST_CASE("chunks read ahead hold the serial decode's batches in file order; failures are listed where they fall") {
  Folder f;
  const int size = 24;
  // The serial reference: the readable photos, preprocessed in the caller's thread.
  std::vector<std::string> readable;
  std::vector<Tensor> inputs;
  for (std::size_t i = 0; i < f.files.size(); ++i) {
    if (i == 2 || i == 5) continue;
    readable.push_back(f.files[i]);
    inputs.push_back(img::preprocess_eval(img::read_image(f.files[i]), size));
  }

  SUBCASE("one batch per chunk") {
    train::PhotoChunkReader reader(f.files, size, 3, 0);
    const auto chunks = read_all(reader);
    // Batches fill with the next readable photos: {0,1,3}, {4,6,7}, {8}.
    REQUIRE(chunks.size() == 3);
    CHECK(chunks[0].failures.size() == 1);
    CHECK(chunks[0].failures[0].find("p2.jpg") != std::string::npos);
    CHECK(chunks[1].failures.size() == 1);
    CHECK(chunks[1].failures[0].find("p5.png") != std::string::npos);
    CHECK(chunks[2].failures.empty());
    std::size_t k = 0;
    for (const auto& c : chunks) {
      REQUIRE(c.batches.size() == 1);
      const train::PhotoBatch& b = c.batches[0];
      CHECK(b.x.shape()[0] == static_cast<int64_t>(b.names.size()));
      for (std::size_t i = 0; i < b.names.size(); ++i, ++k) {
        REQUIRE(k < readable.size());
        CHECK(b.names[i] == readable[k]);
        CHECK(test::bitwise_equal(b.x.rows(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1), inputs[k]));
      }
    }
    CHECK(k == readable.size());
  }
  SUBCASE("everything in one chunk") {
    train::PhotoChunkReader reader(f.files, size, 4, std::size_t{1} << 30);
    const auto chunks = read_all(reader);
    REQUIRE(chunks.size() == 1);
    CHECK(chunks[0].failures.size() == 2);
    REQUIRE(chunks[0].batches.size() == 2);
    CHECK(chunks[0].batches[0].names.size() == 4);
    CHECK(chunks[0].batches[1].names.size() == 3);
  }
  SUBCASE("native size: one photo per batch") {
    train::PhotoChunkReader reader(f.files, 0, 16, 0);
    const auto chunks = read_all(reader);
    CHECK(chunks.size() == readable.size());
    for (const auto& c : chunks) CHECK(c.batches.at(0).names.size() == 1);
  }
}

TEST_CASE("a reader with no files is done at once; one dropped with a decode in flight waits for it") {
  train::PhotoChunkReader empty({}, 24, 16, 0);
  CHECK(empty.done());
  test::require_error([&] { empty.next(); }, {"no photos left"});
  Folder f;
  { train::PhotoChunkReader dropped(f.files, 24, 2, 0); }
  train::PhotoChunkReader one(f.files, 24, 2, 0);
  CHECK(!one.done());
  CHECK(one.next().batches.at(0).names.size() == 2);
}

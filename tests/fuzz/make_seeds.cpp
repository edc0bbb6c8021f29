// fuzz_seeds OUT PHOTOS [SHARED]: writes the seed corpus of every fuzz target into OUT/<target>/,
// made from real inputs: the Debian sample photos in PHOTOS (scripts/fetch_test_photos.sh), the
// FLICKR-AES label files in SHARED/flickr-aes when present, and files written by our own writers
// (safetensors, a user file of a real ResNet-18 with adapters, edit recipes). The .pth seeds are
// written by Debian's torch (weights_tools/make_fixtures.py, run by tests/fuzz/run_fuzz.sh).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "model/resnet18.h"
#include "model/safetensors.h"
#include "model/user_file.h"
#include "runtime/error.h"
#include "train/enhance.h"
#include "train/image.h"
#include "train/labels.h"
#include "train/preprocess.h"

namespace fs = std::filesystem;
using namespace ae;

namespace {

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  AE_CHECK(out.good(), "cannot write " << path.string());
}

void write(const fs::path& path, const std::vector<uint8_t>& bytes) {
  write(path, std::string(bytes.begin(), bytes.end()));
}

std::string head_lines(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  std::string out, line;
  for (int i = 0; i < lines && std::getline(in, line); ++i) out += line + "\n";
  return out;
}

// A TIFF-in-APP1 EXIF block whose IFD0 holds an orientation tag (and one other tag before it).
std::vector<uint8_t> exif_block(int orientation, bool little_endian) {
  std::vector<uint8_t> b = {'E', 'x', 'i', 'f', 0, 0};
  auto u16 = [&](unsigned v) {
    if (little_endian) b.insert(b.end(), {uint8_t(v), uint8_t(v >> 8)});
    else b.insert(b.end(), {uint8_t(v >> 8), uint8_t(v)});
  };
  auto u32 = [&](unsigned v) {
    if (little_endian) b.insert(b.end(), {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)});
    else b.insert(b.end(), {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)});
  };
  b.push_back(little_endian ? 'I' : 'M');
  b.push_back(little_endian ? 'I' : 'M');
  u16(42);
  u32(8);  // IFD0 right after the header
  u16(2);  // two entries
  u16(0x010F), u16(2), u32(4), u32(0x4E4F4B00);  // Make, ASCII, 4 bytes inline
  u16(0x0112), u16(3), u32(1), u16(static_cast<unsigned>(orientation)), u16(0);
  u32(0);  // no next IFD
  return b;
}

// The JPEG with an APP1 segment holding `app1` right after SOI.
std::vector<uint8_t> with_app1(const std::vector<uint8_t>& jpeg, const std::vector<uint8_t>& app1) {
  const std::size_t length = app1.size() + 2;
  // Built by push_back: GCC 12 -O2 reports a false -Warray-bounds for inserting an initializer
  // list into a 2-byte vector.
  std::vector<uint8_t> out;
  out.reserve(jpeg.size() + length + 2);
  for (uint8_t byte : {jpeg[0], jpeg[1], uint8_t{0xFF}, uint8_t{0xE1}, uint8_t(length >> 8), uint8_t(length)})
    out.push_back(byte);
  out.insert(out.end(), app1.begin(), app1.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

img::Image small(const img::Image& photo, int long_side) {
  const double s = static_cast<double>(long_side) / std::max(photo.width, photo.height);
  const int w = std::max(1, static_cast<int>(photo.width * s)), h = std::max(1, static_cast<int>(photo.height * s));
  return img::to_u8(img::resize_bilinear_antialias(photo, h, w));
}

void image_seeds(const fs::path& out, const std::string& photos) {
  fs::create_directories(out / "jpeg");
  fs::create_directories(out / "png");
  fs::create_directories(out / "exif");
  int exif_count = 0;
  for (const auto& entry : fs::directory_iterator(photos)) {
    const fs::path p = entry.path();
    const std::string stem = p.stem().string(), ext = p.extension().string();
    const bool jpeg = ext == ".jpg";
    // Small real files go in as they are (palette, gray and RGBA PNGs, a truncated JPEG).
    if (entry.file_size() <= 200 * 1024) fs::copy_file(p, out / (jpeg ? "jpeg" : "png") / p.filename(), fs::copy_options::overwrite_existing);
    img::Image photo;
    try {
      photo = img::read_image(p.string());
    } catch (const Error&) {
      continue;  // truncated.jpg
    }
    const img::Image s = small(photo, 40);
    write(out / "jpeg" / (stem + "_small.jpg"), img::encode_jpeg(s));
    img::JpegOptions progressive;
    progressive.progressive = true;
    progressive.quality = 75;
    const std::vector<uint8_t> prog = img::encode_jpeg(s, progressive);
    write(out / "jpeg" / (stem + "_progressive.jpg"), prog);
    const int orientation = 1 + (exif_count % 8);
    const std::vector<uint8_t> app1 = exif_block(orientation, exif_count % 2 == 0);
    write(out / "jpeg" / (stem + "_exif" + std::to_string(orientation) + ".jpg"), with_app1(img::encode_jpeg(s), app1));
    write(out / "exif" / (stem + "_orientation" + std::to_string(orientation) + ".bin"), app1);
    ++exif_count;
    write(out / "png" / (stem + "_small.png"), img::encode_png(s));
    img::Gray16Image g;
    g.width = s.width;
    g.height = s.height;
    for (std::size_t i = 0; i < s.rgb.size(); i += 3) g.values.push_back(static_cast<uint16_t>(s.rgb[i] * 257));
    g.text = {{"aesthete-map", "saliency"}, {"scale", "0.001"}};
    write(out / "png" / (stem + "_gray16.png"), img::encode_png_gray16(g));
  }
}

void model_seeds(const fs::path& out) {
  fs::create_directories(out / "safetensors");
  fs::create_directories(out / "user_file");
  const st::NamedTensors small = {{"conv.weight", Tensor::from_vector({2, 1, 1, 3}, {1, 2, 3, 4, 5, 6})},
                                  {"bn.num_batches_tracked", Tensor::zeros({}, DType::i64)},
                                  {"empty", Tensor::zeros({0, 4})},
                                  {"mask", Tensor::zeros({5}, DType::u8)}};
  st::write_safetensors((out / "safetensors" / "small.safetensors").string(), small, {{"format", "aesthete"}});
  st::write_safetensors((out / "safetensors" / "no_metadata.safetensors").string(), {small[0]}, {});
  fs::copy_file(out / "safetensors" / "small.safetensors", out / "user_file" / "small.safetensors",
                fs::copy_options::overwrite_existing);
  // A real user file: a ResNet-18 with the seed head and adapters (6.3 MB).
  model::ModelConfig config;
  config.adapters = true;
  config.seed = 3;
  model::ResNet18 user(config);
  model::save_user_file((out / "user_file" / "alice.safetensors").string(), user,
                        "sha256:" + std::string(64, 'a'), "alice");
}

void text_seeds(const fs::path& out, const std::string& shared) {
  fs::create_directories(out / "labels");
  fs::create_directories(out / "recipe");
  const std::string flickr = shared + "/flickr-aes/";
  for (const char* name : {"train_means_normalized.csv", "test_workers_dataset_normalized.csv"})
    if (fs::exists(flickr + name)) write(out / "labels" / name, head_lines(flickr + name, 12));
  std::vector<data::Rating> rows = {{"a.jpg", 0.5, ""}, {"b b.jpg", -1.25, ""}};
  write(out / "labels" / "plain.csv", data::to_plain_csv(rows));
  rows[0].user = "w1";
  rows[1].user = "w2";
  write(out / "labels" / "plain_users.csv", data::to_plain_csv(rows));
  const int count = 5 + train::kToneKnots;
  std::vector<float> theta(static_cast<std::size_t>(count), 0.0f);
  write(out / "recipe" / "identity.json", train::EditRecipe::from_theta(theta, 0.4).to_json());
  for (int i = 0; i < count; ++i) theta[static_cast<std::size_t>(i)] = 0.1f * static_cast<float>(i % 3 - 1);
  write(out / "recipe" / "edit.json", train::EditRecipe::from_theta(theta, 0.4).to_json({{"score_before", -0.2}}));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OUT PHOTOS [SHARED]\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    image_seeds(out, argv[2]);
    model_seeds(out);
    text_seeds(out, argc > 3 ? argv[3] : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}

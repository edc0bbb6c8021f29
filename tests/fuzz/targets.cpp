#include "tests/fuzz/targets.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "model/safetensors.h"
#include "model/user_file.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "train/enhance.h"
#include "train/exif.h"
#include "train/image.h"
#include "train/labels.h"
#include "weights_tools/pth_reader.h"

namespace ae::fuzz {
namespace {

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

void require(bool ok, const char* target, const std::string& what) {
  if (!ok) finding(std::string(target) + ": " + what);
}

// The readers that take a path read it from an in-memory file (memfd), rewritten for each input:
// no disk traffic, and the path works for open, fstat and mmap like a regular file's.
class ScratchFile {
 public:
  ScratchFile() {
    fd_ = ::memfd_create("ae-fuzz-input", MFD_CLOEXEC);
    if (fd_ < 0) finding(std::string("memfd_create failed: ") + std::strerror(errno));
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(const uint8_t* data, std::size_t size) {
    if (::ftruncate(fd_, 0) != 0) finding("ftruncate failed");
    for (std::size_t done = 0; done < size;) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) finding(std::string("pwrite failed: ") + std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

const std::string& scratch(const uint8_t* data, std::size_t size) {
  static ScratchFile file;
  return file.write(data, size);
}

template <typename F> void expect_error_or_success(F&& body) {
  try {
    body();
  } catch (const ae::Error&) {
    // the answer to bad input
  }
}

void check_tensors(const char* target, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  for (const auto& [name, t] : tensors) {
    require(t.defined(), target, "tensor '" + name + "' is undefined");
    require(t.numel() == shape_numel(t.shape()), target, "tensor '" + name + "' numel disagrees with its shape");
  }
}

void run_pth(const uint8_t* data, std::size_t size) {
  const std::string& path = scratch(data, size);
  expect_error_or_success([&] { check_tensors("pth", weights::read_pth(path)); });
  // Without CRC checks the unpickler and the view code see the mutated bytes themselves.
  weights::PthOptions no_crc;
  no_crc.verify_crc = false;
  expect_error_or_success([&] { check_tensors("pth", weights::read_pth(path, no_crc)); });
}

void run_safetensors(const uint8_t* data, std::size_t size) {
  const std::string& path = scratch(data, size);
  expect_error_or_success([&] { check_tensors("safetensors", st::read_safetensors(path).tensors); });
}

void run_user_file(const uint8_t* data, std::size_t size) {
  const std::string& path = scratch(data, size);
  expect_error_or_success([&] {
    const model::UserFile u = model::read_user_file(path);
    check_tensors("user_file", u.tensors);
    require(!u.tensors.empty(), "user_file", "accepted a user file without tensors");
  });
}

void run_labels(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  expect_error_or_success([&] {
    const data::LabelFile f = data::parse_labels(text, "fuzz.csv");
    for (const data::Rating& r : f.rows) {
      require(!r.image.empty(), "labels", "accepted an empty image name");
      require(std::isfinite(r.z), "labels", "accepted a non-finite score");
    }
  });
}

void check_image(const char* target, const img::Image& im) {
  require(im.width > 0 && im.height > 0, target, "decoded an image without pixels");
  require(int64_t{im.width} * im.height <= img::max_pixels(), target, "decoded an image above the pixel limit");
  require(im.rgb.size() == std::size_t(im.width) * std::size_t(im.height) * 3, target,
          "decoded image size disagrees with its buffer");
}

void run_jpeg(const uint8_t* data, std::size_t size) {
  expect_error_or_success([&] { check_image("jpeg", img::decode_jpeg(data, size, "fuzz.jpg")); });
}

void run_png(const uint8_t* data, std::size_t size) {
  expect_error_or_success([&] { check_image("png", img::decode_png(data, size, "fuzz.png")); });
  expect_error_or_success([&] {
    const img::Gray16Image g = img::decode_png_gray16(data, size, "fuzz.png");
    require(g.values.size() == std::size_t(g.width) * std::size_t(g.height) && g.width > 0 && g.height > 0, "png",
            "gray16 image size disagrees with its buffer");
  });
}

void run_exif(const uint8_t* data, std::size_t size) {
  const int o = img::exif_orientation(data, size);
  require(o >= 1 && o <= 8, "exif", "orientation " + std::to_string(o) + " outside 1..8");
  img::Image im;
  im.width = 3;
  im.height = 2;
  im.rgb.resize(18);
  for (std::size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = static_cast<uint8_t>(i);
  const img::Image out = img::apply_orientation(im, o);
  require(out.rgb.size() == im.rgb.size() && int64_t{out.width} * out.height == 6, "exif", "orientation changed the pixel count");
}

void run_recipe(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  expect_error_or_success([&] {
    const train::EditRecipe r = train::EditRecipe::from_json(text, "fuzz.json");
    img::Image im;
    im.width = 4;
    im.height = 3;
    im.rgb.resize(36);
    for (std::size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = static_cast<uint8_t>(i * 7);
    const img::Image out = train::apply_recipe(im, r);
    require(out.width == 4 && out.height == 3 && out.rgb.size() == 36, "recipe", "apply_recipe changed the size");
  });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"pth", ".pth reader: zip central directory, restricted unpickler, storages and views", run_pth},
      {"safetensors", "safetensors reader: header JSON, offsets, dtypes, CRCs", run_safetensors},
      {"user_file", "user files: safetensors plus metadata and layout checks", run_user_file},
      {"labels", "label files: FLICKR-AES means and per-worker formats, plain CSV", run_labels},
      {"jpeg", "JPEG decoding as we wrap libjpeg-turbo (EXIF orientation included)", run_jpeg},
      {"png", "PNG decoding as we wrap libpng (RGB and 16-bit gray maps)", run_png},
      {"exif", "the EXIF (TIFF) orientation parser on an APP1 block", run_exif},
      {"recipe", "edit-recipe JSON (apply-recipe), applied to a small image when accepted", run_recipe},
  };
  return all;
}

const Target& target(const std::string& name) {
  for (const Target& t : targets())
    if (name == t.name) return t;
  std::string names;
  for (const Target& t : targets()) names += std::string(" ") + t.name;
  finding("no fuzz target '" + name + "' (targets:" + names + ")");
}

void initialize() {
  img::set_max_pixels(kFuzzMaxPixels);
  set_log_level(LogLevel::warn);
}

}  // namespace ae::fuzz

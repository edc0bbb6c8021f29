// Format dispatch by magic bytes, file I/O, and u8 <-> float conversions.
#include "train/image.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "runtime/atomic_file.h"
#include "runtime/error.h"

namespace ae::img {
namespace {

bool starts_with(const uint8_t* data, std::size_t size, const uint8_t* magic, std::size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

std::string hex_prefix(const uint8_t* data, std::size_t size) {
  std::string s;
  char buf[4];
  for (std::size_t i = 0; i < std::min<std::size_t>(size, 8); ++i) {
    std::snprintf(buf, sizeof(buf), "%02x ", data[i]);
    s += buf;
  }
  if (!s.empty()) s.pop_back();
  return s;
}

}  // namespace

void check_image(const Image& im, const char* what) {
  AE_CHECK(im.width > 0 && im.height > 0, what << ": image has no pixels (" << im.width << "x" << im.height << ")");
  AE_CHECK(im.rgb.size() == std::size_t(im.width) * std::size_t(im.height) * 3,
           what << ": image " << im.width << "x" << im.height << " holds " << im.rgb.size()
                << " bytes, expected width*height*3");
}

void check_image(const ImageF& im, const char* what) {
  AE_CHECK(im.width > 0 && im.height > 0, what << ": image has no pixels (" << im.width << "x" << im.height << ")");
  AE_CHECK(im.rgb.size() == std::size_t(im.width) * std::size_t(im.height) * 3,
           what << ": float image " << im.width << "x" << im.height << " holds " << im.rgb.size()
                << " values, expected width*height*3");
}

namespace {
std::atomic<int64_t> g_max_pixels{kDefaultMaxPixels};
}

int64_t max_pixels() { return g_max_pixels.load(std::memory_order_relaxed); }

void set_max_pixels(int64_t pixels) {
  AE_CHECK(pixels >= 1 && pixels <= kMaxPixelsCeiling,
           "the pixel limit must be in 1.." << kMaxPixelsCeiling << ", got " << pixels);
  g_max_pixels.store(pixels, std::memory_order_relaxed);
}

std::string too_many_pixels(const std::string& name, uint64_t width, uint64_t height) {
  std::ostringstream os;
  os << name << ": image " << width << "x" << height << " has " << width * height
     << " pixels, more than the limit of " << max_pixels()
     << " (refused before decoding; a larger limit can be set with --max-pixels)";
  return os.str();
}

std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  AE_CHECK(f != nullptr, "cannot open " << path << ": " << std::strerror(errno));
  struct stat info {};
  if (::fstat(::fileno(f), &info) == 0 && S_ISREG(info.st_mode) && static_cast<uint64_t>(info.st_size) > max_bytes) {
    std::fclose(f);
    AE_FAIL("cannot read " << path << ": the file has " << info.st_size << " bytes, more than the limit of "
                           << max_bytes);
  }
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    bytes.insert(bytes.end(), buf, buf + n);
    if (bytes.size() > max_bytes) break;  // a pipe or a file that grows while being read
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  AE_CHECK(!failed, "error while reading " << path);
  AE_CHECK(bytes.size() <= max_bytes, "cannot read " << path << ": more than the limit of " << max_bytes << " bytes");
  return bytes;
}

Image decode_image(const uint8_t* data, std::size_t size, const std::string& name) {
  static const uint8_t kJpegMagic[3] = {0xFF, 0xD8, 0xFF};
  static const uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  AE_CHECK(size > 0, name << ": file is empty");
  if (starts_with(data, size, kJpegMagic, sizeof(kJpegMagic))) return decode_jpeg(data, size, name);
  if (starts_with(data, size, kPngMagic, sizeof(kPngMagic))) return decode_png(data, size, name);
  AE_FAIL(name << ": not a JPEG or PNG file (first bytes " << hex_prefix(data, size) << ")");
}

Image read_image(const std::string& path) {
  return rethrow_as_file_error([&] {  // whatever goes wrong is about the file (ErrorKind::file)
    const std::vector<uint8_t> bytes = read_file(path);
    return decode_image(bytes.data(), bytes.size(), path);
  });
}

void write_jpeg(const std::string& path, const Image& im, int quality) {
  JpegOptions options;
  options.quality = quality;
  const std::vector<uint8_t> bytes = encode_jpeg(im, options);
  rethrow_as_file_error([&] { ae::atomic_write(path, bytes.data(), bytes.size()); });
}

void write_png(const std::string& path, const Image& im) {
  const std::vector<uint8_t> bytes = encode_png(im);
  rethrow_as_file_error([&] { ae::atomic_write(path, bytes.data(), bytes.size()); });
}

ImageF to_float(const Image& im) {
  check_image(im, "to_float");
  ImageF out;
  out.width = im.width;
  out.height = im.height;
  out.rgb.resize(im.rgb.size());
  // Division (not multiplication by 1/255) so values equal torchvision's ToTensor bit for bit.
  for (std::size_t i = 0; i < im.rgb.size(); ++i) out.rgb[i] = static_cast<float>(im.rgb[i]) / 255.0f;
  return out;
}

Image to_u8(const ImageF& im) {
  check_image(im, "to_u8");
  Image out;
  out.width = im.width;
  out.height = im.height;
  out.rgb.resize(im.rgb.size());
  for (std::size_t i = 0; i < im.rgb.size(); ++i) {
    const float v = im.rgb[i];
    const float clamped = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
    out.rgb[i] = static_cast<uint8_t>(std::floor(clamped * 255.0f + 0.5f));
  }
  return out;
}

}  // namespace ae::img

#pragma once
// Photos in memory and on disk.
//
// Image  : 8-bit sRGB, height x width x 3, interleaved (rgb[(y*width + x)*3 + c]), top row first,
//          already turned upright (the EXIF orientation of a JPEG is applied when it is read).
// ImageF : the same layout in float, values nominally in [0,1] (value/255), for resizing and
//          preprocessing.
//
// Reading recognises the format by its first bytes (JPEG: FF D8 FF, PNG: the 8-byte PNG
// signature), never by the file name. Every failure (missing file, truncated or corrupt data,
// unsupported variant such as CMYK JPEG) is an ae::Error whose message names the file.
//
// JPEG: baseline and progressive, 8-bit, YCbCr/RGB/grayscale (gray is expanded to RGB); decoded
//       by libjpeg-turbo with its default (accurate integer) IDCT and fancy upsampling, the same
//       settings PIL uses: on the sample photos of tests/unit/test_image_photos.cpp our pixels
//       equal PIL 9.4's exactly. CMYK/YCCK is refused. Data
//       damage that libjpeg only warns about (premature end of file, bad Huffman code, premature
//       end of a data segment) is an error here, so a truncated photo never half-decodes to grey.
// PNG : every colour type and bit depth (gray, gray+alpha, palette with tRNS, RGB, RGBA, 1..16
//       bits, interlaced). 16-bit samples are scaled to 8 bits with rounding; alpha (including
//       tRNS transparency) is composited onto white in sRGB values:
//       out = round((c*a + 255*(255-a)) / 255). Gamma/ICC chunks are ignored (values are taken
//       as sRGB), as PIL does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ae::img {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height x width x 3, interleaved
};

struct ImageF {
  int width = 0, height = 0;
  std::vector<float> rgb;  // height x width x 3, interleaved, nominally [0,1]
};

// The largest image decoded (width*height), checked on the header before any pixel memory is
// allocated, so a corrupt or hostile header (a "decompression bomb": a few kB declaring
// 200000x200000) is refused with an error instead of asking for gigabytes. The default, 2^28 =
// 268,435,456 pixels (16384x16384), is above every single-shot camera (the largest sensors have
// 100-150 megapixels); pixel-shift composites and stitched panoramas above it need a larger limit
// (`--max-pixels` of score, enhance, apply-recipe, saliency, train and personalise). A decoded
// pixel costs 3 bytes, 4 more while a PNG is decoded, and 12 as float: about 5 GB at the default.
// Process-wide and thread-safe; set_max_pixels accepts 1..kMaxPixelsCeiling (2^29, so that
// width*height*3 fits in an int) and throws ae::Error otherwise.
inline constexpr int64_t kDefaultMaxPixels = int64_t{1} << 28;
inline constexpr int64_t kMaxPixelsCeiling = int64_t{1} << 29;
// The default limit under its former name (callers that check sizes of their own; the limit in
// force is max_pixels()).
inline constexpr int64_t kMaxPixels = kDefaultMaxPixels;
int64_t max_pixels();
void set_max_pixels(int64_t pixels);
// The ae::Error message for a photo of width x height above the limit (names the file and the option).
std::string too_many_pixels(const std::string& name, uint64_t width, uint64_t height);

// The largest file read_file reads (photos, recipes): its size is checked before reading.
inline constexpr uint64_t kMaxFileBytes = uint64_t{2} << 30;

// ---- reading ----
// JPEG or PNG, recognised by content. `path` is used for reading and in error messages.
Image read_image(const std::string& path);
// The same from bytes in memory; `name` is only used in error messages.
Image decode_image(const uint8_t* data, std::size_t size, const std::string& name);
Image decode_jpeg(const uint8_t* data, std::size_t size, const std::string& name);  // orientation applied
Image decode_png(const uint8_t* data, std::size_t size, const std::string& name);

// ---- writing ----
struct JpegOptions {
  int quality = 92;          // 1..100
  bool progressive = false;  // progressive scan script (jpeg_simple_progression)
};
std::vector<uint8_t> encode_jpeg(const Image& im, const JpegOptions& options = {});
std::vector<uint8_t> encode_png(const Image& im);  // 8-bit RGB, lossless
// Both write atomically (ae::atomic_write: a temporary file beside `path`, fsync, rename).
void write_jpeg(const std::string& path, const Image& im, int quality = 92);
void write_png(const std::string& path, const Image& im);
// The whole file; a file larger than max_bytes is refused (ae::Error with its size) before reading.
std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes = kMaxFileBytes);

// ---- 16-bit grayscale PNG: numeric maps (the raw saliency map) ----
// One channel of 16-bit samples (row-major, top row first) and PNG tEXt chunks (keyword, text;
// Latin-1 keywords of 1..79 printable characters), which carry how to turn samples into numbers.
struct Gray16Image {
  int width = 0, height = 0;
  std::vector<uint16_t> values;  // height x width
  std::vector<std::pair<std::string, std::string>> text;
};
// Non-interlaced, 16-bit grayscale; the tEXt chunks precede the image data.
std::vector<uint8_t> encode_png_gray16(const Gray16Image& im);
// Only a 16-bit grayscale PNG (interlaced or not) is accepted: anything else is an ae::Error
// naming the file and what it is, so that a photo is never read back as a map. Every text chunk
// (tEXt, zTXt, iTXt), before or after the image data, lands in `text`.
Gray16Image decode_png_gray16(const uint8_t* data, std::size_t size, const std::string& name);
Gray16Image read_png_gray16(const std::string& path);
// The text of `keyword`, or nullptr.
const std::string* find_text(const Gray16Image& im, const std::string& keyword);

// ---- conversions ----
ImageF to_float(const Image& im);  // v / 255
Image to_u8(const ImageF& im);     // round(clamp(v, 0, 1) * 255), halves up; NaN becomes 0

// Checks that width, height and the buffer size agree (what: names the caller in the error).
void check_image(const Image& im, const char* what);
void check_image(const ImageF& im, const char* what);

}  // namespace ae::img

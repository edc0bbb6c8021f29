// PNG decode and encode with libpng's classic API.
//
// libpng reports errors through an error callback that must not return; ours keeps the message
// and longjmps to png_jmpbuf. As in jpeg_io.cpp, the setjmp sits in a small function whose state
// all lives behind a pointer. Input comes from memory through a read callback that raises a
// "truncated" error instead of reading past the end.
#include <png.h>

#include <csetjmp>
#include <cstring>
#include <memory>

#include "runtime/error.h"
#include "runtime/log.h"
#include "train/image.h"

namespace ae::img {
namespace {

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string message;
  // decode
  const uint8_t* data = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  Image image;
  std::vector<uint8_t> rgba;  // decoded rows before alpha compositing
  // Row pointers live here, not in run_decode: a libpng error longjmps out of run_decode, which
  // would skip a local vector's destructor (a leak LeakSanitizer found with damaged PNGs).
  std::vector<png_bytep> rows;
  std::string refusal;
  bool too_large = false;  // the header declares more than max_pixels(): nothing was allocated
  uint32_t declared_width = 0, declared_height = 0;
  // encode
  const Image* source = nullptr;
  std::vector<uint8_t> out;
};

void on_error(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  s->message = msg ? msg : "unknown libpng error";
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp msg) { AE_DEBUG("libpng warning: " << (msg ? msg : "")); }

void read_from_memory(png_structp png, png_bytep dst, png_size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (s->size - s->pos < n) png_error(png, "file is truncated (unexpected end of data)");
  std::memcpy(dst, s->data + s->pos, n);
  s->pos += n;
}

void write_to_memory(png_structp png, png_bytep src, png_size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  s->out.insert(s->out.end(), src, src + n);
}

void flush_nothing(png_structp) {}

// The chunk lengths of a PNG held in memory, checked before libpng sees them: no chunk may reach
// past the end of the data. libpng allocates (and clears) a buffer of a text chunk's declared
// length before reading it, so a 61-byte file declaring a 2 GB zTXt chunk made it allocate 2 GB
// (found by tests/regressions/png/chunk_length_2gb.png under ASan). Returns "" or the problem.
std::string check_chunk_lengths(const uint8_t* data, std::size_t size) {
  std::size_t pos = 8;  // after the signature (checked by the caller or by libpng)
  while (pos + 8 <= size) {
    const uint32_t length = uint32_t{data[pos]} << 24 | uint32_t{data[pos + 1]} << 16 | uint32_t{data[pos + 2]} << 8 |
                            uint32_t{data[pos + 3]};
    const std::string type(reinterpret_cast<const char*>(data + pos + 4), 4);
    if (length > size - pos - 8 || size - pos - 8 - length < 4) {
      std::string printable;
      for (char c : type) printable += (c >= 'A' && c <= 'z') ? c : '?';
      return "PNG chunk '" + printable + "' at byte " + std::to_string(pos) + " declares " + std::to_string(length) +
             " bytes, more than the " + std::to_string(size - pos) + " bytes left in the file (truncated or corrupt)";
    }
    if (type == "IEND") break;
    pos += std::size_t{length} + 12;
  }
  return "";
}

// Composite 8-bit RGBA onto white: out = round((c*a + 255*(255-a)) / 255).
void composite_on_white(const std::vector<uint8_t>& rgba, std::vector<uint8_t>& rgb) {
  const std::size_t n = rgba.size() / 4;
  rgb.resize(n * 3);
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned a = rgba[i * 4 + 3];
    for (int c = 0; c < 3; ++c) {
      const unsigned v = rgba[i * 4 + c] * a + 255u * (255u - a);
      rgb[i * 3 + c] = static_cast<uint8_t>((v + 127u) / 255u);
    }
  }
}

bool run_decode(PngState* s) {
  if (setjmp(png_jmpbuf(s->png)) != 0) return false;
  png_set_read_fn(s->png, s, read_from_memory);
  png_read_info(s->png, s->info);
  const png_uint_32 w = png_get_image_width(s->png, s->info);
  const png_uint_32 h = png_get_image_height(s->png, s->info);
  if (int64_t{w} * int64_t{h} > max_pixels()) {
    s->too_large = true;
    s->declared_width = w;
    s->declared_height = h;
    return true;
  }
  const int color_type = png_get_color_type(s->png, s->info);
  // Normalise every variant to 8-bit RGBA: palette -> RGB, low-bit gray -> 8 bits, tRNS -> alpha,
  // 16 -> 8 bits (rounded), gray -> RGB, then an opaque alpha byte where there is none.
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s->png);
  if (color_type == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(s->png, s->info) < 8)
    png_set_expand_gray_1_2_4_to_8(s->png);
  if (png_get_valid(s->png, s->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(s->png);
  png_set_scale_16(s->png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(s->png);
  png_set_filler(s->png, 0xFF, PNG_FILLER_AFTER);
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  if (png_get_rowbytes(s->png, s->info) != std::size_t{w} * 4) {
    s->refusal = "unexpected row size after conversion to RGBA";
    return true;
  }
  s->rgba.resize(std::size_t{w} * h * 4);
  s->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) s->rows[y] = s->rgba.data() + std::size_t{y} * w * 4;
  png_read_image(s->png, s->rows.data());
  png_read_end(s->png, nullptr);
  s->image.width = static_cast<int>(w);
  s->image.height = static_cast<int>(h);
  return true;
}

bool run_encode(PngState* s) {
  if (setjmp(png_jmpbuf(s->png)) != 0) return false;
  const Image& im = *s->source;
  png_set_write_fn(s->png, s, write_to_memory, flush_nothing);
  png_set_IHDR(s->png, s->info, static_cast<png_uint_32>(im.width), static_cast<png_uint_32>(im.height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(s->png, s->info);
  const std::size_t stride = std::size_t(im.width) * 3;
  for (int y = 0; y < im.height; ++y) {
    // libpng's API takes non-const rows but does not write through them.
    png_write_row(s->png, const_cast<png_bytep>(im.rgb.data() + std::size_t(y) * stride));
  }
  png_write_end(s->png, nullptr);
  return true;
}

// ---- 16-bit grayscale (numeric maps) ----

struct Gray16State {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string message;
  std::string refusal;
  bool too_large = false;
  uint32_t declared_width = 0, declared_height = 0;
  // decode
  const uint8_t* data = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  Gray16Image image;
  std::vector<uint8_t> bytes;  // big-endian samples, as stored
  std::vector<png_bytep> rows;
  // encode
  const Gray16Image* source = nullptr;
  std::vector<png_text> text;
  std::vector<uint8_t> out;
};

// PngState-compatible callbacks: both structs start with png, info, message.
void on_error16(png_structp png, png_const_charp msg) {
  auto* s = static_cast<Gray16State*>(png_get_error_ptr(png));
  s->message = msg ? msg : "unknown libpng error";
  png_longjmp(png, 1);
}

void read16_from_memory(png_structp png, png_bytep dst, png_size_t n) {
  auto* s = static_cast<Gray16State*>(png_get_io_ptr(png));
  if (s->size - s->pos < n) png_error(png, "file is truncated (unexpected end of data)");
  std::memcpy(dst, s->data + s->pos, n);
  s->pos += n;
}

void write16_to_memory(png_structp png, png_bytep src, png_size_t n) {
  auto* s = static_cast<Gray16State*>(png_get_io_ptr(png));
  s->out.insert(s->out.end(), src, src + n);
}

const char* color_type_name(int t) {
  switch (t) {
    case PNG_COLOR_TYPE_GRAY: return "grayscale";
    case PNG_COLOR_TYPE_GRAY_ALPHA: return "grayscale+alpha";
    case PNG_COLOR_TYPE_PALETTE: return "palette";
    case PNG_COLOR_TYPE_RGB: return "RGB";
    case PNG_COLOR_TYPE_RGB_ALPHA: return "RGBA";
    default: return "unknown colour type";
  }
}

void collect_text(Gray16State* s) {
  png_textp text = nullptr;
  int count = 0;
  png_get_text(s->png, s->info, &text, &count);
  for (int i = 0; i < count; ++i) {
    if (text[i].key == nullptr) continue;
    // libpng hands every kind (tEXt, zTXt, iTXt) back decompressed and NUL-terminated.
    s->image.text.emplace_back(text[i].key, text[i].text != nullptr ? std::string(text[i].text) : std::string());
  }
}

bool run_decode_gray16(Gray16State* s) {
  if (setjmp(png_jmpbuf(s->png)) != 0) return false;
  png_set_read_fn(s->png, s, read16_from_memory);
  png_read_info(s->png, s->info);
  const png_uint_32 w = png_get_image_width(s->png, s->info);
  const png_uint_32 h = png_get_image_height(s->png, s->info);
  const int color_type = png_get_color_type(s->png, s->info);
  const int depth = png_get_bit_depth(s->png, s->info);
  if (color_type != PNG_COLOR_TYPE_GRAY || depth != 16) {
    s->refusal = "not a 16-bit grayscale PNG (it is " + std::string(color_type_name(color_type)) + ", " +
                 std::to_string(depth) + " bits per sample)";
    return true;
  }
  if (int64_t{w} * int64_t{h} > max_pixels()) {
    s->too_large = true;
    s->declared_width = w;
    s->declared_height = h;
    return true;
  }
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  if (png_get_rowbytes(s->png, s->info) != std::size_t{w} * 2) {
    s->refusal = "unexpected row size";
    return true;
  }
  s->bytes.resize(std::size_t{w} * h * 2);
  s->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) s->rows[y] = s->bytes.data() + std::size_t{y} * w * 2;
  png_read_image(s->png, s->rows.data());
  png_read_end(s->png, s->info);  // text chunks after the image data land in info too
  s->image.width = static_cast<int>(w);
  s->image.height = static_cast<int>(h);
  collect_text(s);
  return true;
}

bool run_encode_gray16(Gray16State* s) {
  if (setjmp(png_jmpbuf(s->png)) != 0) return false;
  const Gray16Image& im = *s->source;
  png_set_write_fn(s->png, s, write16_to_memory, flush_nothing);
  png_set_IHDR(s->png, s->info, static_cast<png_uint_32>(im.width), static_cast<png_uint_32>(im.height), 16,
               PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!s->text.empty()) png_set_text(s->png, s->info, s->text.data(), static_cast<int>(s->text.size()));
  png_write_info(s->png, s->info);
  for (int y = 0; y < im.height; ++y) png_write_row(s->png, s->bytes.data() + std::size_t(y) * im.width * 2);
  png_write_end(s->png, nullptr);
  return true;
}

}  // namespace

Image decode_png(const uint8_t* data, std::size_t size, const std::string& name) {
  AE_CHECK(data != nullptr && size > 0, name << ": PNG data is empty");
  const std::string bad_chunk = check_chunk_lengths(data, size);
  AE_CHECK(bad_chunk.empty(), name << ": cannot decode PNG: " << bad_chunk);
  auto s = std::make_unique<PngState>();
  s->data = data;
  s->size = size;
  s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s.get(), on_error, on_warning);
  AE_CHECK(s->png != nullptr, name << ": cannot create a libpng reader");
  s->info = png_create_info_struct(s->png);
  if (s->info == nullptr) {
    png_destroy_read_struct(&s->png, nullptr, nullptr);
    AE_FAIL(name << ": cannot create a libpng info struct");
  }
  // Real photos' PNGs have chunks no larger than a few MB; this stops a corrupt length from
  // asking for gigabytes while leaving libpng's own limits otherwise in place.
  png_set_chunk_malloc_max(s->png, 64u << 20);
  const bool ok = run_decode(s.get());
  png_destroy_read_struct(&s->png, &s->info, nullptr);
  AE_CHECK(ok, name << ": cannot decode PNG (corrupt, truncated or unsupported): " << s->message);
  AE_CHECK(!s->too_large, too_many_pixels(name, s->declared_width, s->declared_height));
  AE_CHECK(s->refusal.empty(), name << ": " << s->refusal);
  composite_on_white(s->rgba, s->image.rgb);
  return std::move(s->image);
}

std::vector<uint8_t> encode_png(const Image& im) {
  check_image(im, "encode_png");
  auto s = std::make_unique<PngState>();
  s->source = &im;
  s->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s.get(), on_error, on_warning);
  AE_CHECK(s->png != nullptr, "encode_png: cannot create a libpng writer");
  s->info = png_create_info_struct(s->png);
  if (s->info == nullptr) {
    png_destroy_write_struct(&s->png, nullptr);
    AE_FAIL("encode_png: cannot create a libpng info struct");
  }
  const bool ok = run_encode(s.get());
  png_destroy_write_struct(&s->png, &s->info);
  AE_CHECK(ok, "encode_png: libpng failed: " << s->message);
  return std::move(s->out);
}

}  // namespace ae::img

namespace ae::img {

std::vector<uint8_t> encode_png_gray16(const Gray16Image& im) {
  AE_CHECK(im.width > 0 && im.height > 0 && int64_t{im.width} * im.height <= kMaxPixelsCeiling,
           "encode_png_gray16: bad size " << im.width << "x" << im.height);
  AE_CHECK(im.values.size() == std::size_t(im.width) * std::size_t(im.height),
           "encode_png_gray16: " << im.values.size() << " values for " << im.width << "x" << im.height);
  auto s = std::make_unique<Gray16State>();
  s->source = &im;
  for (const auto& [key, value] : im.text) {
    AE_CHECK(!key.empty() && key.size() <= 79, "encode_png_gray16: PNG text keyword '" << key << "' must have 1..79 characters");
    for (unsigned char c : key)
      AE_CHECK(c >= 32 && c != 127 && !(c > 127 && c < 161), "encode_png_gray16: PNG text keyword '" << key << "' has a character PNG does not allow");
    AE_CHECK(key.front() != ' ' && key.back() != ' ' && key.find("  ") == std::string::npos,
             "encode_png_gray16: PNG text keyword '" << key << "' has leading, trailing or double spaces");
    AE_CHECK(value.find('\0') == std::string::npos, "encode_png_gray16: PNG text for '" << key << "' holds a NUL");
    png_text t{};
    t.compression = PNG_TEXT_COMPRESSION_NONE;
    t.key = const_cast<png_charp>(key.c_str());  // libpng copies them; it does not write through these
    t.text = const_cast<png_charp>(value.c_str());
    t.text_length = value.size();
    s->text.push_back(t);
  }
  s->bytes.resize(im.values.size() * 2);
  for (std::size_t i = 0; i < im.values.size(); ++i) {  // PNG samples are big-endian
    s->bytes[2 * i] = static_cast<uint8_t>(im.values[i] >> 8);
    s->bytes[2 * i + 1] = static_cast<uint8_t>(im.values[i] & 0xFF);
  }
  s->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s.get(), on_error16, on_warning);
  AE_CHECK(s->png != nullptr, "encode_png_gray16: cannot create a libpng writer");
  s->info = png_create_info_struct(s->png);
  if (s->info == nullptr) {
    png_destroy_write_struct(&s->png, nullptr);
    AE_FAIL("encode_png_gray16: cannot create a libpng info struct");
  }
  const bool ok = run_encode_gray16(s.get());
  png_destroy_write_struct(&s->png, &s->info);
  AE_CHECK(ok, "encode_png_gray16: libpng failed: " << s->message);
  return std::move(s->out);
}

Gray16Image decode_png_gray16(const uint8_t* data, std::size_t size, const std::string& name) {
  AE_CHECK(data != nullptr && size > 0, name << ": PNG data is empty");
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  AE_CHECK(size >= 8 && std::memcmp(data, kSignature, 8) == 0, name << ": not a PNG file");
  const std::string bad_chunk = check_chunk_lengths(data, size);
  AE_CHECK(bad_chunk.empty(), name << ": cannot decode PNG: " << bad_chunk);
  auto s = std::make_unique<Gray16State>();
  s->data = data;
  s->size = size;
  s->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s.get(), on_error16, on_warning);
  AE_CHECK(s->png != nullptr, name << ": cannot create a libpng reader");
  s->info = png_create_info_struct(s->png);
  if (s->info == nullptr) {
    png_destroy_read_struct(&s->png, nullptr, nullptr);
    AE_FAIL(name << ": cannot create a libpng info struct");
  }
  png_set_chunk_malloc_max(s->png, 64u << 20);
  const bool ok = run_decode_gray16(s.get());
  png_destroy_read_struct(&s->png, &s->info, nullptr);
  AE_CHECK(ok, name << ": cannot decode PNG (corrupt, truncated or unsupported): " << s->message);
  AE_CHECK(!s->too_large, too_many_pixels(name, s->declared_width, s->declared_height));
  AE_CHECK(s->refusal.empty(), name << ": " << s->refusal);
  Gray16Image& im = s->image;
  im.values.resize(s->bytes.size() / 2);
  for (std::size_t i = 0; i < im.values.size(); ++i)
    im.values[i] = static_cast<uint16_t>((uint16_t{s->bytes[2 * i]} << 8) | s->bytes[2 * i + 1]);
  return std::move(s->image);
}

Gray16Image read_png_gray16(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return decode_png_gray16(bytes.data(), bytes.size(), path);
}

const std::string* find_text(const Gray16Image& im, const std::string& keyword) {
  for (const auto& [key, value] : im.text)
    if (key == keyword) return &value;
  return nullptr;
}

}  // namespace ae::img

// Image decoding and encoding: PNG (every colour type) and JPEG (baseline, progressive, gray,
// EXIF orientation, CMYK refusal), truncated and corrupt files, u8 <-> float conversions.
// Test images are made here: with our encoders, or with libjpeg/libpng directly for the
// variants our encoders never write (gray, CMYK, EXIF, palette, 16-bit, alpha ...).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>
#include <filesystem>
#include <fstream>

#include "runtime/error.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "train/exif.h"
#include "train/image.h"

namespace fs = std::filesystem;
using ae::img::Image;
using ae::test::error_of;

namespace {

std::string scratch_dir() {
  const fs::path dir = fs::path(ae::test::build_dir()) / "test-image-io";
  fs::create_directories(dir);
  return dir.string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// An asymmetric pattern: every pixel differs from its mirror images and rotations.
Image pattern(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(std::size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) im.rgb[(std::size_t(y) * w + x) * 3 + c] = uint8_t((x * 7 + y * 31 + c * 85 + x * y) % 256);
  return im;
}

// A smooth image (what JPEG is good at), for lossy round trips.
Image smooth(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(std::size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.rgb[(std::size_t(y) * w + x) * 3];
      p[0] = uint8_t(40 + 150 * x / w);
      p[1] = uint8_t(60 + 120 * y / h);
      p[2] = uint8_t(128 + 60 * std::sin(0.1 * (x + y)));
    }
  return im;
}

double mean_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.rgb.size() == b.rgb.size());
  double s = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) s += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
  return s / double(a.rgb.size());
}

// ---- raw libjpeg writer for variants our encoder does not produce ----

struct TestJpegSpec {
  J_COLOR_SPACE color = JCS_RGB;  // JCS_RGB (3 samples), JCS_GRAYSCALE (1), JCS_CMYK (4)
  int quality = 95;
  bool progressive = false;
  bool full_chroma = false;        // 4:4:4 instead of 4:2:0
  std::vector<uint8_t> app1;       // written as an APP1 marker when not empty
};

struct TestJpegErr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};

void test_jpeg_error_exit(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<TestJpegErr*>(cinfo->err)->jump, 1); }

struct TestJpegJob {
  jpeg_compress_struct cinfo;
  TestJpegErr err;
  unsigned char* out = nullptr;
  unsigned long size = 0;
};

bool run_test_jpeg(TestJpegJob* j, int w, int h, const TestJpegSpec* spec, const std::vector<uint8_t>* samples) {
  if (setjmp(j->err.jump) != 0) return false;
  jpeg_mem_dest(&j->cinfo, &j->out, &j->size);
  j->cinfo.image_width = JDIMENSION(w);
  j->cinfo.image_height = JDIMENSION(h);
  j->cinfo.in_color_space = spec->color;
  j->cinfo.input_components = spec->color == JCS_GRAYSCALE ? 1 : spec->color == JCS_CMYK ? 4 : 3;
  jpeg_set_defaults(&j->cinfo);
  jpeg_set_quality(&j->cinfo, spec->quality, TRUE);
  if (spec->full_chroma)
    for (int c = 0; c < j->cinfo.num_components; ++c) j->cinfo.comp_info[c].h_samp_factor = j->cinfo.comp_info[c].v_samp_factor = 1;
  if (spec->progressive) jpeg_simple_progression(&j->cinfo);
  jpeg_start_compress(&j->cinfo, TRUE);
  if (!spec->app1.empty()) jpeg_write_marker(&j->cinfo, JPEG_APP0 + 1, spec->app1.data(), unsigned(spec->app1.size()));
  const int stride = w * j->cinfo.input_components;
  while (j->cinfo.next_scanline < j->cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(samples->data()) + std::size_t(j->cinfo.next_scanline) * stride;
    jpeg_write_scanlines(&j->cinfo, &row, 1);
  }
  jpeg_finish_compress(&j->cinfo);
  return true;
}

std::vector<uint8_t> make_jpeg(int w, int h, const std::vector<uint8_t>& samples, const TestJpegSpec& spec) {
  auto j = std::make_unique<TestJpegJob>();
  j->cinfo.err = jpeg_std_error(&j->err.pub);
  j->err.pub.error_exit = test_jpeg_error_exit;
  jpeg_create_compress(&j->cinfo);
  const bool ok = run_test_jpeg(j.get(), w, h, &spec, &samples);
  jpeg_destroy_compress(&j->cinfo);
  std::vector<uint8_t> bytes(j->out, j->out + (ok ? j->size : 0));
  std::free(j->out);
  REQUIRE(ok);
  return bytes;
}

// The APP1 payload of an EXIF block with IFD0 = {ImageWidth, Orientation, Software}: the
// orientation is deliberately not the first entry.
std::vector<uint8_t> make_exif(int orientation, bool little_endian) {
  std::vector<uint8_t> b = {'E', 'x', 'i', 'f', 0, 0};
  auto u16 = [&](uint16_t v) {
    if (little_endian) { b.push_back(uint8_t(v)); b.push_back(uint8_t(v >> 8)); }
    else { b.push_back(uint8_t(v >> 8)); b.push_back(uint8_t(v)); }
  };
  auto u32 = [&](uint32_t v) {
    if (little_endian) for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
    else for (int i = 3; i >= 0; --i) b.push_back(uint8_t(v >> (8 * i)));
  };
  if (little_endian) { b.push_back('I'); b.push_back('I'); } else { b.push_back('M'); b.push_back('M'); }
  u16(42);
  u32(8);  // IFD0 right after the 8-byte TIFF header
  u16(3);  // entries
  u16(0x0100); u16(4); u32(1); u32(640);                              // ImageWidth LONG
  u16(0x0112); u16(3); u32(1); u16(uint16_t(orientation)); u16(0);    // Orientation SHORT
  u16(0x0131); u16(2); u32(4); b.push_back('a'); b.push_back('e'); b.push_back('!'); b.push_back(0);  // Software
  u32(0);  // no next IFD
  return b;
}

}  // namespace

// ------------------------------------------------------------------ conversions

TEST_CASE("to_float and to_u8 round-trip every 8-bit value exactly") {
  Image im;
  im.width = 256;
  im.height = 1;
  for (int v = 0; v < 256; ++v) for (int c = 0; c < 3; ++c) im.rgb.push_back(uint8_t(v));
  const ae::img::ImageF f = ae::img::to_float(im);
  CHECK(f.rgb[3 * 255] == 1.0f);
  CHECK(f.rgb[3 * 51] == doctest::Approx(0.2f));
  CHECK(ae::img::to_u8(f).rgb == im.rgb);
}

TEST_CASE("to_u8 rounds halves up, clamps, and maps NaN to 0") {
  ae::img::ImageF f;
  f.width = 2;
  f.height = 1;
  f.rgb = {-0.5f, 1.7f, std::nanf(""), 0.5f / 255.0f + 1e-6f, 0.49f / 255.0f, 100.4f / 255.0f};
  const Image u = ae::img::to_u8(f);
  CHECK(u.rgb == std::vector<uint8_t>{0, 255, 0, 1, 0, 100});
}

TEST_CASE("conversions reject an image whose buffer disagrees with its size") {
  Image im;
  im.width = 2;
  im.height = 2;
  im.rgb.resize(5);
  CHECK_THROWS_AS(ae::img::to_float(im), ae::Error);
  CHECK_THROWS_AS(ae::img::encode_png(im), ae::Error);
  CHECK_THROWS_AS(ae::img::encode_jpeg(Image{}), ae::Error);
}

// ------------------------------------------------------------------ PNG

TEST_CASE("PNG write then read is exact, through files, at awkward sizes") {
  const std::string dir = scratch_dir();
  for (auto [w, h] : {std::pair{1, 1}, {7, 5}, {64, 33}, {3, 100}}) {
    const Image im = pattern(w, h);
    const std::string path = dir + "/round_" + std::to_string(w) + "x" + std::to_string(h) + ".png";
    ae::img::write_png(path, im);
    const Image back = ae::img::read_image(path);
    CHECK(back.width == w);
    CHECK(back.height == h);
    CHECK(back.rgb == im.rgb);
  }
}

namespace {

// Writes a PNG with libpng directly. `rows` holds packed samples as libpng expects them
// (16-bit samples big-endian).
struct TestPngSpec {
  int color_type = PNG_COLOR_TYPE_RGB;
  int bit_depth = 8;
  bool interlace = false;
  std::vector<png_color> palette;
  std::vector<uint8_t> trns;  // palette alpha entries
  bool gray_trns = false;     // for gray: tRNS marks gray value trns_gray as transparent
  uint16_t trns_gray = 0;
};

TestPngSpec png_spec(int color_type, int bit_depth) {
  TestPngSpec spec;
  spec.color_type = color_type;
  spec.bit_depth = bit_depth;
  return spec;
}

struct PngWriteJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<uint8_t> out;
};

void test_png_write(png_structp png, png_bytep data, png_size_t n) {
  auto* j = static_cast<PngWriteJob*>(png_get_io_ptr(png));
  j->out.insert(j->out.end(), data, data + n);
}
void test_png_flush(png_structp) {}

bool run_test_png(PngWriteJob* j, int w, int h, const TestPngSpec* spec, std::vector<std::vector<uint8_t>>* rows) {
  if (setjmp(png_jmpbuf(j->png)) != 0) return false;
  png_set_write_fn(j->png, j, test_png_write, test_png_flush);
  png_set_IHDR(j->png, j->info, png_uint_32(w), png_uint_32(h), spec->bit_depth, spec->color_type,
               spec->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!spec->palette.empty()) png_set_PLTE(j->png, j->info, spec->palette.data(), int(spec->palette.size()));
  if (!spec->trns.empty()) png_set_tRNS(j->png, j->info, spec->trns.data(), int(spec->trns.size()), nullptr);
  png_color_16 gray{};
  gray.gray = spec->trns_gray;
  if (spec->gray_trns) png_set_tRNS(j->png, j->info, nullptr, 0, &gray);
  std::vector<png_bytep> ptrs;
  for (auto& r : *rows) ptrs.push_back(r.data());
  png_set_rows(j->png, j->info, ptrs.data());
  png_write_png(j->png, j->info, PNG_TRANSFORM_IDENTITY, nullptr);
  return true;
}

std::vector<uint8_t> make_png(int w, int h, std::vector<std::vector<uint8_t>> rows, const TestPngSpec& spec) {
  PngWriteJob j;
  j.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  j.info = png_create_info_struct(j.png);
  const bool ok = run_test_png(&j, w, h, &spec, &rows);
  png_destroy_write_struct(&j.png, &j.info);
  REQUIRE(ok);
  return j.out;
}

uint8_t on_white(int c, int a) { return uint8_t(std::lround((c * a + 255.0 * (255 - a)) / 255.0)); }

Image decode(const std::vector<uint8_t>& bytes, const std::string& name = "test") {
  return ae::img::decode_image(bytes.data(), bytes.size(), name);
}

}  // namespace

TEST_CASE("PNG gray 8-bit expands to RGB") {
  const auto bytes = make_png(3, 1, {{0, 128, 255}}, png_spec(PNG_COLOR_TYPE_GRAY, 8));
  const Image im = decode(bytes);
  CHECK(im.rgb == std::vector<uint8_t>{0, 0, 0, 128, 128, 128, 255, 255, 255});
}

TEST_CASE("PNG gray 1-bit and 4-bit scale to 0..255") {
  // 1-bit: pixels 1,0,1 packed MSB first.
  const Image one = decode(make_png(3, 1, {{0b10100000}}, png_spec(PNG_COLOR_TYPE_GRAY, 1)));
  CHECK(one.rgb == std::vector<uint8_t>{255, 255, 255, 0, 0, 0, 255, 255, 255});
  // 4-bit: pixels 0x3, 0xF -> 0x33, 0xFF.
  const Image four = decode(make_png(2, 1, {{0x3F}}, png_spec(PNG_COLOR_TYPE_GRAY, 4)));
  CHECK(four.rgb == std::vector<uint8_t>{0x33, 0x33, 0x33, 255, 255, 255});
}

TEST_CASE("PNG gray with tRNS: the transparent gray level becomes white") {
  TestPngSpec spec = png_spec(PNG_COLOR_TYPE_GRAY, 8);
  spec.gray_trns = true;
  spec.trns_gray = 10;
  const Image im = decode(make_png(2, 1, {{10, 11}}, spec));
  CHECK(im.rgb == std::vector<uint8_t>{255, 255, 255, 11, 11, 11});
}

TEST_CASE("PNG gray+alpha is composited on white") {
  const Image im = decode(make_png(3, 1, {{100, 255, 100, 0, 100, 77}}, png_spec(PNG_COLOR_TYPE_GRAY_ALPHA, 8)));
  const uint8_t c = on_white(100, 77);
  CHECK(im.rgb == std::vector<uint8_t>{100, 100, 100, 255, 255, 255, c, c, c});
}

TEST_CASE("PNG RGBA is composited on white per channel") {
  const Image im = decode(make_png(2, 1, {{200, 100, 0, 128, 1, 2, 3, 255}}, png_spec(PNG_COLOR_TYPE_RGBA, 8)));
  CHECK(im.rgb == std::vector<uint8_t>{on_white(200, 128), on_white(100, 128), on_white(0, 128), 1, 2, 3});
  CHECK(im.rgb[0] == 227);  // (200*128 + 255*127) / 255 = 227.39
}

TEST_CASE("PNG palette with tRNS, 8-bit and 2-bit indices") {
  TestPngSpec spec = png_spec(PNG_COLOR_TYPE_PALETTE, 8);
  spec.palette = {{10, 20, 30}, {200, 150, 100}, {0, 0, 255}};
  spec.trns = {255, 0, 64};  // entry 1 fully transparent, entry 2 a quarter opaque
  const Image im = decode(make_png(4, 1, {{0, 1, 2, 0}}, spec));
  CHECK(im.rgb == std::vector<uint8_t>{10, 20, 30, 255, 255, 255, on_white(0, 64), on_white(0, 64), on_white(255, 64),
                                       10, 20, 30});
  spec.bit_depth = 2;
  spec.trns.clear();
  const Image small = decode(make_png(3, 1, {{0b10'01'00'00}}, spec));  // indices 2,1,0
  CHECK(small.rgb == std::vector<uint8_t>{0, 0, 255, 200, 150, 100, 10, 20, 30});
}

TEST_CASE("PNG 16-bit RGB and RGBA are scaled to 8 bits with rounding") {
  auto be = [](uint16_t v) { return std::vector<uint8_t>{uint8_t(v >> 8), uint8_t(v)}; };
  std::vector<uint8_t> row;
  for (uint16_t v : {uint16_t(0x1234), uint16_t(0xFFFF), uint16_t(0x0080)}) {
    auto b = be(v);
    row.insert(row.end(), b.begin(), b.end());
  }
  const Image im = decode(make_png(1, 1, {row}, png_spec(PNG_COLOR_TYPE_RGB, 16)));
  CHECK(im.rgb == std::vector<uint8_t>{uint8_t(std::lround(0x1234 * 255.0 / 65535)), 255, 0});
  std::vector<uint8_t> rgba = row;
  auto a = be(0xFFFF);
  rgba.insert(rgba.end(), a.begin(), a.end());
  CHECK(decode(make_png(1, 1, {rgba}, png_spec(PNG_COLOR_TYPE_RGBA, 16))).rgb == im.rgb);
  // 16-bit gray
  const Image g = decode(make_png(1, 1, {be(0x8000)}, png_spec(PNG_COLOR_TYPE_GRAY, 16)));
  CHECK(g.rgb == std::vector<uint8_t>{128, 128, 128});
}

TEST_CASE("PNG interlaced (Adam7) decodes to the same pixels") {
  const Image im = pattern(13, 11);
  std::vector<std::vector<uint8_t>> rows;
  for (int y = 0; y < im.height; ++y)
    rows.emplace_back(im.rgb.begin() + y * im.width * 3, im.rgb.begin() + (y + 1) * im.width * 3);
  TestPngSpec spec = png_spec(PNG_COLOR_TYPE_RGB, 8);
  spec.interlace = true;
  CHECK(decode(make_png(im.width, im.height, rows, spec)).rgb == im.rgb);
}

TEST_CASE("truncated PNG is an error naming the file, at every cut point") {
  const std::vector<uint8_t> bytes = ae::img::encode_png(pattern(40, 30));
  for (std::size_t cut : {std::size_t(8), std::size_t(20), std::size_t(33), bytes.size() / 2, bytes.size() - 13,
                          bytes.size() - 1}) {
    CAPTURE(cut);
    const std::string msg = error_of([&] { ae::img::decode_image(bytes.data(), cut, "cut.png"); });
    CHECK(msg.find("cut.png") != std::string::npos);
    CHECK(msg.find("PNG") != std::string::npos);
  }
}

TEST_CASE("PNG with damaged IDAT data or a wrong IDAT CRC is an error") {
  const std::vector<uint8_t> good = ae::img::encode_png(pattern(40, 30));
  const char tag[] = "IDAT";
  const std::size_t at = std::size_t(std::search(good.begin(), good.end(), tag, tag + 4) - good.begin());
  REQUIRE(at < good.size());
  const std::size_t length = (std::size_t(good[at - 4]) << 24) | (good[at - 3] << 16) | (good[at - 2] << 8) | good[at - 1];
  std::vector<uint8_t> bytes = good;
  bytes[at + 10] ^= 0x55;  // inside the deflate stream
  std::string msg = error_of([&] { decode(bytes, "damaged.png"); });
  CHECK(msg.find("damaged.png") != std::string::npos);
  CHECK(msg.find("corrupt") != std::string::npos);
  bytes = good;
  bytes[at + 4 + length] ^= 0x01;  // first byte of the chunk's CRC
  msg = error_of([&] { decode(bytes, "badcrc.png"); });
  CHECK(msg.find("badcrc.png") != std::string::npos);
  CHECK(msg.find("CRC") != std::string::npos);
}

TEST_CASE("random damage to a PNG never crashes: it decodes or throws ae::Error") {
  const std::vector<uint8_t> good = ae::img::encode_png(pattern(17, 9));
  uint32_t state = 12345;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> bytes = good;
    for (int k = 0; k < 3; ++k) {
      state = state * 1664525u + 1013904223u;
      bytes[8 + state % (bytes.size() - 8)] ^= uint8_t(1 + (state >> 24) % 255);
    }
    try {
      const Image im = decode(bytes);
      CHECK(im.rgb.size() == std::size_t(im.width) * im.height * 3);
    } catch (const ae::Error&) {
    }
  }
}

// ------------------------------------------------------------------ JPEG

TEST_CASE("JPEG write then read is close to the original, and quality matters") {
  const std::string dir = scratch_dir();
  const Image im = smooth(67, 45);
  ae::img::write_jpeg(dir + "/q95.jpg", im, 95);
  ae::img::write_jpeg(dir + "/q30.jpg", im, 30);
  const Image hi = ae::img::read_image(dir + "/q95.jpg");
  const Image lo = ae::img::read_image(dir + "/q30.jpg");
  CHECK(hi.width == 67);
  CHECK(hi.height == 45);
  const double err_hi = mean_abs_diff(hi, im), err_lo = mean_abs_diff(lo, im);
  MESSAGE("mean |diff| at q95 " << err_hi << ", at q30 " << err_lo);
  CHECK(err_hi < 1.5);
  CHECK(err_lo < 4.0);
  CHECK(err_hi < err_lo);
  CHECK(fs::file_size(dir + "/q95.jpg") > fs::file_size(dir + "/q30.jpg"));
  CHECK_THROWS_AS(ae::img::encode_jpeg(im, {0, false}), ae::Error);
  CHECK_THROWS_AS(ae::img::encode_jpeg(im, {101, false}), ae::Error);
}

TEST_CASE("the format is recognised by content, not by file name") {
  const std::string dir = scratch_dir();
  const Image im = pattern(5, 4);
  const std::vector<uint8_t> png = ae::img::encode_png(im);
  write_bytes(dir + "/really_a_png.jpg", png);
  CHECK(ae::img::read_image(dir + "/really_a_png.jpg").rgb == im.rgb);
  write_bytes(dir + "/really_a_jpeg.png", ae::img::encode_jpeg(smooth(16, 16)));
  CHECK(ae::img::read_image(dir + "/really_a_jpeg.png").width == 16);
}

TEST_CASE("writes are atomic: no temporary file is left, an existing file is replaced") {
  const std::string dir = scratch_dir() + "/atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  ae::img::write_png(dir + "/a.png", pattern(4, 4));
  ae::img::write_png(dir + "/a.png", pattern(6, 2));
  ae::img::write_jpeg(dir + "/b.jpg", smooth(8, 8));
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) { (void)e; ++files; }
  CHECK(files == 2);
  CHECK(ae::img::read_image(dir + "/a.png").width == 6);
  CHECK_THROWS_AS(ae::img::write_png(dir + "/no/such/dir/x.png", pattern(2, 2)), ae::Error);
}

TEST_CASE("progressive JPEG (our encoder and libjpeg's simple progression) decodes") {
  const Image im = smooth(50, 37);
  const std::vector<uint8_t> prog = ae::img::encode_jpeg(im, {95, true});
  const uint8_t sof2[2] = {0xFF, 0xC2};
  CHECK(std::search(prog.begin(), prog.end(), sof2, sof2 + 2) != prog.end());
  const Image back = decode(prog);
  CHECK(back.width == 50);
  CHECK(back.height == 37);
  CHECK(mean_abs_diff(back, im) < 1.5);
  // a truncated progressive file must not half-decode silently either
  const std::string msg = error_of([&] { ae::img::decode_image(prog.data(), prog.size() * 2 / 3, "prog.jpg"); });
  CHECK(msg.find("prog.jpg") != std::string::npos);
}

TEST_CASE("grayscale JPEG expands to equal R, G and B") {
  const int w = 24, h = 16;
  std::vector<uint8_t> gray(std::size_t(w) * h);
  for (int i = 0; i < w * h; ++i) gray[i] = uint8_t(30 + (i % w) * 8);
  TestJpegSpec spec;
  spec.color = JCS_GRAYSCALE;
  spec.quality = 100;
  const Image im = decode(make_jpeg(w, h, gray, spec));
  REQUIRE(im.width == w);
  REQUIRE(im.height == h);
  double err = 0;
  for (int i = 0; i < w * h; ++i) {
    CHECK(im.rgb[i * 3] == im.rgb[i * 3 + 1]);
    CHECK(im.rgb[i * 3] == im.rgb[i * 3 + 2]);
    err += std::abs(int(im.rgb[i * 3]) - int(gray[i]));
  }
  CHECK(err / (w * h) < 1.0);
}

TEST_CASE("CMYK JPEG is refused with a clear message") {
  const int w = 16, h = 8;
  std::vector<uint8_t> cmyk(std::size_t(w) * h * 4, 100);
  TestJpegSpec spec;
  spec.color = JCS_CMYK;
  const std::string msg = error_of([&] { decode(make_jpeg(w, h, cmyk, spec), "print.jpg"); });
  CHECK(msg.find("print.jpg") != std::string::npos);
  CHECK(msg.find("CMYK JPEG not supported: convert to RGB") != std::string::npos);
}

TEST_CASE("truncated JPEG is an error naming the file, never a half-grey image") {
  const std::vector<uint8_t> bytes = ae::img::encode_jpeg(pattern(64, 48), {90, false});
  for (std::size_t cut : {std::size_t(3), std::size_t(40), std::size_t(200), bytes.size() / 2, bytes.size() - 50,
                          bytes.size() - 2}) {
    CAPTURE(cut);
    const std::string msg = error_of([&] { ae::img::decode_image(bytes.data(), cut, "cut.jpg"); });
    CHECK(msg.find("cut.jpg") != std::string::npos);
    CHECK(msg.find("JPEG") != std::string::npos);
  }
}

TEST_CASE("corrupt JPEG headers are errors") {
  const std::vector<uint8_t> good = ae::img::encode_jpeg(pattern(16, 16));
  // SOF0 precision byte set to 12 bits (not supported by an 8-bit decoder)
  std::vector<uint8_t> bytes = good;
  const uint8_t sof0[2] = {0xFF, 0xC0};
  auto sof = std::search(bytes.begin(), bytes.end(), sof0, sof0 + 2);
  REQUIRE(sof != bytes.end());
  sof[4] = 12;
  CHECK(error_of([&] { decode(bytes, "p12.jpg"); }).find("p12.jpg") != std::string::npos);
  // zero components
  bytes = good;
  sof = std::search(bytes.begin(), bytes.end(), sof0, sof0 + 2);
  sof[9] = 0;
  CHECK(error_of([&] { decode(bytes, "c0.jpg"); }).find("c0.jpg") != std::string::npos);
  // garbage right after the magic bytes
  std::vector<uint8_t> junk = {0xFF, 0xD8, 0xFF, 0x00, 0x12, 0x34, 0x56};
  CHECK(error_of([&] { decode(junk, "junk.jpg"); }).find("junk.jpg") != std::string::npos);
}

TEST_CASE("random damage to a JPEG never crashes: it decodes or throws ae::Error") {
  const std::vector<uint8_t> good = ae::img::encode_jpeg(pattern(24, 17));
  uint32_t state = 777;
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> bytes = good;
    for (int k = 0; k < 3; ++k) {
      state = state * 1664525u + 1013904223u;
      bytes[3 + state % (bytes.size() - 3)] ^= uint8_t(1 + (state >> 24) % 255);
    }
    try {
      const Image im = decode(bytes);
      CHECK(im.rgb.size() == std::size_t(im.width) * im.height * 3);
    } catch (const ae::Error&) {
      ++errors;
    }
  }
  MESSAGE(errors << " of 300 damaged JPEGs were rejected");
  CHECK(errors > 0);
}

TEST_CASE("files that are missing, empty or not images give errors naming them") {
  const std::string dir = scratch_dir();
  CHECK(error_of([&] { ae::img::read_image(dir + "/does_not_exist.jpg"); }).find("does_not_exist.jpg") !=
        std::string::npos);
  write_bytes(dir + "/empty.png", {});
  CHECK(error_of([&] { ae::img::read_image(dir + "/empty.png"); }).find("empty") != std::string::npos);
  write_bytes(dir + "/text.jpg", {'h', 'e', 'l', 'l', 'o'});
  const std::string msg = error_of([&] { ae::img::read_image(dir + "/text.jpg"); });
  CHECK(msg.find("text.jpg") != std::string::npos);
  CHECK(msg.find("not a JPEG or PNG") != std::string::npos);
}

// ------------------------------------------------------------------ EXIF orientation

TEST_CASE("exif_orientation reads both byte orders and ignores malformed blocks") {
  for (bool le : {true, false}) {
    for (int o = 1; o <= 8; ++o) {
      const auto b = make_exif(o, le);
      CHECK(ae::img::exif_orientation(b.data(), b.size()) == o);
    }
    for (int bad : {0, 9, 300}) {
      const auto b = make_exif(bad, le);
      CHECK(ae::img::exif_orientation(b.data(), b.size()) == 1);
    }
    // every truncation of a valid block: no crash, and either the right value or "none"
    const auto b = make_exif(6, le);
    for (std::size_t n = 0; n <= b.size(); ++n) {
      const int o = ae::img::exif_orientation(b.data(), n);
      CHECK((o == 6 || o == 1));
    }
  }
  auto b = make_exif(6, true);
  b[6] = 'X';  // byte order mark broken
  CHECK(ae::img::exif_orientation(b.data(), b.size()) == 1);
  b = make_exif(6, true);
  b[10] = 0xF0;  // IFD0 offset far outside the block
  CHECK(ae::img::exif_orientation(b.data(), b.size()) == 1);
  b = make_exif(6, true);
  b[14] = 0xFF;  // entry count 255: entries run past the end
  CHECK(ae::img::exif_orientation(b.data(), b.size()) == 1);
  b = make_exif(6, false);
  b[6 + 8 + 2 + 12 + 3] = 4;  // orientation stored as LONG instead of SHORT
  CHECK(ae::img::exif_orientation(b.data(), b.size()) == 1);
  const uint8_t not_exif[] = "http://ns.adobe.com/xap/1.0/";
  CHECK(ae::img::exif_orientation(not_exif, sizeof(not_exif)) == 1);
  CHECK(ae::img::exif_orientation(nullptr, 0) == 1);
}

namespace {

// A 3x2 grid of flat 8x8 blocks with distinct colours A..F (4:4:4, quality 100, so block
// centres survive JPEG almost exactly):   A B C
//                                         D E F
const uint8_t kBlockColour[6][3] = {{230, 30, 30}, {30, 230, 30}, {30, 30, 230},
                                    {230, 230, 30}, {30, 230, 230}, {230, 30, 230}};
constexpr int kBlock = 8;

std::vector<uint8_t> grid_samples() {
  std::vector<uint8_t> s(std::size_t(3 * kBlock) * 2 * kBlock * 3);
  for (int y = 0; y < 2 * kBlock; ++y)
    for (int x = 0; x < 3 * kBlock; ++x)
      for (int c = 0; c < 3; ++c) s[(std::size_t(y) * 3 * kBlock + x) * 3 + c] = kBlockColour[(y / kBlock) * 3 + x / kBlock][c];
  return s;
}

// Which block letter (0..5 = A..F) the centre of grid cell (col, row) of `im` shows.
int block_at(const Image& im, int col, int row) {
  const int x = col * kBlock + kBlock / 2, y = row * kBlock + kBlock / 2;
  const uint8_t* p = &im.rgb[(std::size_t(y) * im.width + x) * 3];
  for (int k = 0; k < 6; ++k)
    if (std::abs(p[0] - kBlockColour[k][0]) < 12 && std::abs(p[1] - kBlockColour[k][1]) < 12 &&
        std::abs(p[2] - kBlockColour[k][2]) < 12)
      return k;
  return -1;
}

}  // namespace

TEST_CASE("EXIF orientations 1..8 in a JPEG put every block where PIL's exif_transpose does") {
  // Expected upright layouts, rows top to bottom, written out by hand from the EXIF spec.
  const std::vector<std::vector<std::string>> expected = {
      {"ABC", "DEF"},        // 1
      {"CBA", "FED"},        // 2 mirror left-right
      {"FED", "CBA"},        // 3 rotate 180
      {"DEF", "ABC"},        // 4 mirror top-bottom
      {"AD", "BE", "CF"},    // 5 transpose
      {"DA", "EB", "FC"},    // 6 rotate 90 clockwise
      {"FC", "EB", "DA"},    // 7 transverse
      {"CF", "BE", "AD"},    // 8 rotate 90 counter-clockwise
  };
  const std::vector<uint8_t> samples = grid_samples();
  for (bool le : {true, false}) {
    for (int o = 1; o <= 8; ++o) {
      CAPTURE(o);
      CAPTURE(le);
      TestJpegSpec spec;
      spec.quality = 100;
      spec.full_chroma = true;
      spec.app1 = make_exif(o, le);
      const Image im = decode(make_jpeg(3 * kBlock, 2 * kBlock, samples, spec));
      const auto& rows = expected[o - 1];
      REQUIRE(im.height == int(rows.size()) * kBlock);
      REQUIRE(im.width == int(rows[0].size()) * kBlock);
      for (int r = 0; r < int(rows.size()); ++r)
        for (int c = 0; c < int(rows[r].size()); ++c) CHECK(block_at(im, c, r) == rows[r][c] - 'A');
    }
  }
}

TEST_CASE("apply_orientation swaps sizes for 5..8 and rejects values outside 1..8") {
  const Image im = pattern(5, 3);
  for (int o = 1; o <= 8; ++o) {
    const Image r = ae::img::apply_orientation(im, o);
    CHECK(r.width == (o >= 5 ? 3 : 5));
    CHECK(r.height == (o >= 5 ? 5 : 3));
  }
  // 6 then 8 (90 clockwise, then 90 counter-clockwise) and 3 twice are the identity
  CHECK(ae::img::apply_orientation(ae::img::apply_orientation(im, 6), 8).rgb == im.rgb);
  CHECK(ae::img::apply_orientation(ae::img::apply_orientation(im, 3), 3).rgb == im.rgb);
  CHECK_THROWS_AS(ae::img::apply_orientation(im, 0), ae::Error);
  CHECK_THROWS_AS(ae::img::apply_orientation(im, 9), ae::Error);
}

namespace {

// Sets the pixel limit for one test and puts the previous one back.
struct PixelLimit {
  int64_t saved = ae::img::max_pixels();
  explicit PixelLimit(int64_t pixels) { ae::img::set_max_pixels(pixels); }
  ~PixelLimit() { ae::img::set_max_pixels(saved); }
};

void put32be(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void png_chunk(std::vector<uint8_t>& b, const char* type, const std::vector<uint8_t>& data) {
  put32be(b, static_cast<uint32_t>(data.size()));
  std::vector<uint8_t> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  b.insert(b.end(), body.begin(), body.end());
  put32be(b, static_cast<uint32_t>(::crc32(0, body.data(), static_cast<uInt>(body.size()))));
}

// A 69-byte PNG whose header declares width x height (8-bit RGB) over a few bytes of image data.
std::vector<uint8_t> png_header_only(uint32_t width, uint32_t height, uint8_t depth = 8, uint8_t color = 2) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  std::vector<uint8_t> ihdr;
  put32be(ihdr, width);
  put32be(ihdr, height);
  ihdr.insert(ihdr.end(), {depth, color, 0, 0, 0});
  png_chunk(b, "IHDR", ihdr);
  png_chunk(b, "IDAT", {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01});
  png_chunk(b, "IEND", {});
  return b;
}

}  // namespace

TEST_CASE("a PNG header declaring 200000x200000 is refused before anything is allocated") {
  // Allocating the 120 GB would fail (std::bad_alloc) or take the machine down; the error must be
  // our refusal, naming the file, the size, the limit and the option that raises it.
  const std::vector<uint8_t> bomb = png_header_only(200000, 200000);
  const std::string msg = error_of([&] { ae::img::decode_image(bomb.data(), bomb.size(), "bomb.png"); });
  AE_CHECK_CONTAINS(msg, "bomb.png: image 200000x200000 has 40000000000 pixels, more than the limit of 268435456");
  AE_CHECK_CONTAINS(msg, "refused before decoding");
  AE_CHECK_CONTAINS(msg, "--max-pixels");
  // Just above the default limit (16384x16385, 1 GB of RGBA, which would be allocated): the same
  // refusal, not a decoding error after the allocation.
  const std::vector<uint8_t> above = png_header_only(16384, 16385);
  AE_CHECK_CONTAINS(error_of([&] { ae::img::decode_image(above.data(), above.size(), "above.png"); }),
                    "image 16384x16385 has 268451840 pixels, more than the limit of 268435456");
  const std::vector<uint8_t> gray16 = png_header_only(100000, 100000, 16, 0);
  AE_CHECK_CONTAINS(error_of([&] { ae::img::decode_png_gray16(gray16.data(), gray16.size(), "map.png"); }),
                    "map.png: image 100000x100000 has 10000000000 pixels");
}

TEST_CASE("the pixel limit is a setting: photos up to it decode, one pixel more is refused") {
  CHECK(ae::img::max_pixels() == ae::img::kDefaultMaxPixels);
  const Image im = smooth(20, 15);  // 300 pixels
  const std::vector<uint8_t> png = ae::img::encode_png(im);
  const std::vector<uint8_t> jpeg = ae::img::encode_jpeg(im, {90, false});
  const std::vector<uint8_t> prog = ae::img::encode_jpeg(im, {90, true});
  {
    const PixelLimit limit(300);
    CHECK(decode(png).width == 20);
    CHECK(decode(jpeg).height == 15);
    CHECK(decode(prog).width == 20);
  }
  {
    const PixelLimit limit(299);
    for (const auto* bytes : {&png, &jpeg, &prog}) {
      const std::string msg = error_of([&] { ae::img::decode_image(bytes->data(), bytes->size(), "small.img"); });
      AE_CHECK_CONTAINS(msg, "small.img: image 20x15 has 300 pixels, more than the limit of 299");
    }
  }
  CHECK(ae::img::max_pixels() == ae::img::kDefaultMaxPixels);
  AE_CHECK_CONTAINS(error_of([] { ae::img::set_max_pixels(0); }), "the pixel limit must be in 1..536870912, got 0");
  AE_CHECK_CONTAINS(error_of([] { ae::img::set_max_pixels(ae::img::kMaxPixelsCeiling + 1); }), "got 536870913");
  CHECK(ae::img::max_pixels() == ae::img::kDefaultMaxPixels);
}

// A progressive JPEG with its first scan (the DC scan, with the Huffman tables written just before
// it) repeated `repeats` times after itself. libjpeg only warns about a repeated scan and decodes it
// again, so each repeat costs another pass.
std::vector<uint8_t> with_repeated_first_scan(const std::vector<uint8_t>& jpeg, int repeats) {
  std::size_t pos = 2, tables = 0;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xFF && jpeg[pos + 1] != 0xDA) {
    const uint8_t marker = jpeg[pos + 1];
    if (marker == 0xC4 && tables == 0) tables = pos;  // first DHT of the run before SOS
    if (marker != 0xC4) tables = 0;
    pos += 2 + (std::size_t{jpeg[pos + 2]} << 8 | jpeg[pos + 3]);
  }
  REQUIRE(pos + 4 <= jpeg.size());
  REQUIRE(tables != 0);
  std::size_t end = pos + 2 + (std::size_t{jpeg[pos + 2]} << 8 | jpeg[pos + 3]);
  while (end + 1 < jpeg.size() && !(jpeg[end] == 0xFF && jpeg[end + 1] != 0 && (jpeg[end + 1] & 0xF8) != 0xD0)) ++end;
  const std::vector<uint8_t> chunk(jpeg.begin() + static_cast<std::ptrdiff_t>(tables), jpeg.begin() + static_cast<std::ptrdiff_t>(end));
  std::vector<uint8_t> out(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(end));
  for (int i = 0; i < repeats; ++i) out.insert(out.end(), chunk.begin(), chunk.end());
  out.insert(out.end(), jpeg.begin() + static_cast<std::ptrdiff_t>(end), jpeg.end());
  return out;
}

TEST_CASE("a progressive JPEG with more than 500 scans is refused instead of decoding for minutes") {
  const Image im = smooth(16, 16);
  const std::vector<uint8_t> prog = ae::img::encode_jpeg(im, {90, true});
  const std::vector<uint8_t> many = with_repeated_first_scan(prog, 600);
  const std::string msg = error_of([&] { ae::img::decode_image(many.data(), many.size(), "scans.jpg"); });
  AE_CHECK_CONTAINS(msg, "scans.jpg: cannot decode JPEG");
  AE_CHECK_CONTAINS(msg, "progressive JPEG with more than 500 scans");
  // 20 repeats stay within the limit and decode to the same picture.
  const Image some = decode(with_repeated_first_scan(prog, 20));
  CHECK(some.width == 16);
  CHECK(mean_abs_diff(some, decode(prog)) == 0);
}

TEST_CASE("read_file refuses a file above its size limit before reading it") {
  const std::string path = scratch_dir() + "/sized.bin";
  write_bytes(path, std::vector<uint8_t>(1000, 7));
  CHECK(ae::img::read_file(path, 1000).size() == 1000);
  AE_CHECK_CONTAINS(error_of([&] { ae::img::read_file(path, 999); }),
                    "cannot read " + path + ": the file has 1000 bytes, more than the limit of 999");
}

TEST_CASE("a PNG chunk longer than the file is refused before libpng allocates it") {
  // 61 bytes declaring a 2 GB zTXt chunk: libpng allocated and cleared 2 GB for it.
  std::vector<uint8_t> b = png_header_only(1, 1);
  b.resize(33);  // signature and IHDR only
  put32be(b, 0x7ffffff0);
  for (char c : std::string("zTXtk\0\0", 7)) b.push_back(static_cast<uint8_t>(c));
  b.resize(61, 0x78);
  for (const std::string& msg : {error_of([&] { ae::img::decode_image(b.data(), b.size(), "ztxt.png"); }),
                                 error_of([&] { ae::img::decode_png_gray16(b.data(), b.size(), "ztxt.png"); })}) {
    AE_CHECK_CONTAINS(msg, "ztxt.png: cannot decode PNG: PNG chunk 'zTXt' at byte 33 declares 2147483632 bytes, "
                           "more than the 28 bytes left in the file");
  }
  // A chunk whose CRC would lie past the end is caught the same way; complete files still decode.
  const std::vector<uint8_t> good = ae::img::encode_png(smooth(7, 5));
  const std::vector<uint8_t> cut(good.begin(), good.end() - 14);  // into IEND's predecessor's CRC
  AE_CHECK_CONTAINS(error_of([&] { ae::img::decode_image(cut.data(), cut.size(), "cut.png"); }), "cut.png: cannot decode PNG");
  CHECK(decode(good).width == 7);
}

// JPEG decode and encode with libjpeg-turbo.
//
// libjpeg reports fatal errors through error_exit, whose default calls exit(). We install our
// own that longjmps back to the decode/encode call; the message is kept and rethrown there as
// an ae::Error naming the file. The setjmp sits in a small function whose state all lives
// behind a pointer, so nothing it touches becomes indeterminate after the longjmp.
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>

#include "runtime/error.h"
#include "runtime/log.h"
#include "train/exif.h"
#include "train/image.h"

namespace ae::img {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg hands us a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

[[noreturn]] void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings that mean pixels were lost (libjpeg fills the rest with grey and carries on) are
// errors for us; the others (e.g. extraneous bytes before a marker) are harmless and logged.
bool warning_means_data_loss(int code) {
  switch (code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
      return true;
    default:
      return false;
  }
}

void on_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;  // trace messages
  cinfo->err->num_warnings++;
  if (warning_means_data_loss(cinfo->err->msg_code)) on_error_exit(cinfo);
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  AE_DEBUG("libjpeg warning: " << text);
}

void install_error_manager(jpeg_error_mgr*& slot, ErrorManager& err) {
  slot = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error_exit;
  err.pub.emit_message = on_emit_message;
}

// ---------------------------------------------------------------- decode

struct DecodeState {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  const uint8_t* data = nullptr;
  std::size_t size = 0;
  jpeg_progress_mgr progress{};
  bool too_large = false;  // the header declares more than max_pixels(): nothing was allocated
  Image image;
  int orientation = 1;
  std::string refusal;  // set when the file is valid but of a kind we do not support
};

const char* color_space_name(J_COLOR_SPACE cs) {
  switch (cs) {
    case JCS_CMYK: return "CMYK";
    case JCS_YCCK: return "YCCK";
    case JCS_UNKNOWN: return "unknown";
    default: return "other";
  }
}

// A progressive JPEG may hold any number of scans, and each scan costs a pass over the whole
// coefficient buffer: a few kB of empty scans keep the decoder busy for minutes. Real photos have
// about 10 (jpegtran's custom scripts rarely more than 100); refuse files with more than
// kMaxScans, as libjpeg-turbo's own tools do (djpeg -maxscans, TJPARAM_SCANLIMIT).
constexpr int kMaxScans = 500;

void on_progress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->is_decompressor && d->input_scan_number > kMaxScans) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(err->message, sizeof(err->message),
                  "progressive JPEG with more than %d scans (real photos have about 10): refused, it would take "
                  "minutes to decode",
                  kMaxScans);
    std::longjmp(err->jump, 1);
  }
}

// Returns false when libjpeg longjmp'ed out (message in s->err.message).
bool run_decode(DecodeState* s) {
  if (setjmp(s->err.jump) != 0) return false;
  s->progress.progress_monitor = on_progress;
  s->cinfo.progress = &s->progress;
  jpeg_mem_src(&s->cinfo, s->data, static_cast<unsigned long>(s->size));
  jpeg_save_markers(&s->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&s->cinfo, TRUE);

  for (jpeg_saved_marker_ptr m = s->cinfo.marker_list; m != nullptr; m = m->next) {
    if (m->marker == JPEG_APP0 + 1) {
      const int o = exif_orientation(m->data, m->data_length);
      if (o != 1) s->orientation = o;
    }
  }
  const J_COLOR_SPACE cs = s->cinfo.jpeg_color_space;
  if (cs == JCS_CMYK || cs == JCS_YCCK) {
    s->refusal = std::string(color_space_name(cs)) + " JPEG not supported: convert to RGB";
    return true;
  }
  if (cs != JCS_GRAYSCALE && cs != JCS_YCbCr && cs != JCS_RGB) {
    s->refusal = "JPEG with " + std::to_string(s->cinfo.num_components) + " components in colour space " +
                 color_space_name(cs) + " not supported: convert to RGB";
    return true;
  }
  // Checked on the header, before jpeg_start_decompress allocates anything for the pixels.
  const int64_t pixels = int64_t{s->cinfo.image_width} * s->cinfo.image_height;
  if (pixels > max_pixels()) {
    s->too_large = true;
    return true;
  }
  s->cinfo.out_color_space = JCS_RGB;  // libjpeg-turbo expands grayscale to RGB itself
  jpeg_start_decompress(&s->cinfo);
  if (s->cinfo.output_components != 3) {
    s->refusal = "decoder produced " + std::to_string(s->cinfo.output_components) + " components, expected 3";
    return true;
  }
  Image& im = s->image;
  im.width = static_cast<int>(s->cinfo.output_width);
  im.height = static_cast<int>(s->cinfo.output_height);
  im.rgb.resize(std::size_t(im.width) * im.height * 3);
  while (s->cinfo.output_scanline < s->cinfo.output_height) {
    JSAMPROW row = im.rgb.data() + std::size_t(s->cinfo.output_scanline) * im.width * 3;
    jpeg_read_scanlines(&s->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&s->cinfo);
  return true;
}

// ---------------------------------------------------------------- encode

struct EncodeState {
  jpeg_compress_struct cinfo;
  ErrorManager err;
  const Image* image = nullptr;
  JpegOptions options;
  unsigned char* out = nullptr;  // malloc'ed by jpeg_mem_dest
  unsigned long out_size = 0;
};

bool run_encode(EncodeState* s) {
  if (setjmp(s->err.jump) != 0) return false;
  jpeg_mem_dest(&s->cinfo, &s->out, &s->out_size);
  s->cinfo.image_width = static_cast<JDIMENSION>(s->image->width);
  s->cinfo.image_height = static_cast<JDIMENSION>(s->image->height);
  s->cinfo.input_components = 3;
  s->cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&s->cinfo);
  jpeg_set_quality(&s->cinfo, s->options.quality, TRUE);
  if (s->options.progressive) jpeg_simple_progression(&s->cinfo);
  jpeg_start_compress(&s->cinfo, TRUE);
  const int stride = s->image->width * 3;
  while (s->cinfo.next_scanline < s->cinfo.image_height) {
    // libjpeg's API takes non-const rows but does not write through them.
    JSAMPROW row = const_cast<uint8_t*>(s->image->rgb.data()) + std::size_t(s->cinfo.next_scanline) * stride;
    jpeg_write_scanlines(&s->cinfo, &row, 1);
  }
  jpeg_finish_compress(&s->cinfo);
  return true;
}

}  // namespace

Image decode_jpeg(const uint8_t* data, std::size_t size, const std::string& name) {
  AE_CHECK(data != nullptr && size > 0, name << ": JPEG data is empty");
  auto s = std::make_unique<DecodeState>();
  s->data = data;
  s->size = size;
  install_error_manager(s->cinfo.err, s->err);
  jpeg_create_decompress(&s->cinfo);
  const bool ok = run_decode(s.get());
  jpeg_destroy_decompress(&s->cinfo);
  AE_CHECK(ok, name << ": cannot decode JPEG (corrupt, truncated or unsupported): " << s->err.message);
  AE_CHECK(!s->too_large, too_many_pixels(name, s->cinfo.image_width, s->cinfo.image_height));
  AE_CHECK(s->refusal.empty(), name << ": " << s->refusal);
  if (s->orientation != 1) return apply_orientation(s->image, s->orientation);
  return std::move(s->image);
}

std::vector<uint8_t> encode_jpeg(const Image& im, const JpegOptions& options) {
  check_image(im, "encode_jpeg");
  AE_CHECK(options.quality >= 1 && options.quality <= 100, "encode_jpeg: quality " << options.quality
                                                               << " is not in 1..100");
  AE_CHECK(im.width <= JPEG_MAX_DIMENSION && im.height <= JPEG_MAX_DIMENSION,
           "encode_jpeg: " << im.width << "x" << im.height << " exceeds JPEG's limit of " << JPEG_MAX_DIMENSION);
  auto s = std::make_unique<EncodeState>();
  s->image = &im;
  s->options = options;
  install_error_manager(s->cinfo.err, s->err);
  jpeg_create_compress(&s->cinfo);
  const bool ok = run_encode(s.get());
  jpeg_destroy_compress(&s->cinfo);
  std::vector<uint8_t> bytes;
  if (ok) bytes.assign(s->out, s->out + s->out_size);
  std::free(s->out);
  AE_CHECK(ok, "encode_jpeg: libjpeg failed: " << s->err.message);
  return bytes;
}

}  // namespace ae::img

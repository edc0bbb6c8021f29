#include "train/exif.h"

#include <cstring>

#include "runtime/error.h"

namespace ae::img {
namespace {

// A bounds-checked view of the TIFF structure inside the EXIF block.
class TiffReader {
 public:
  TiffReader(const uint8_t* data, std::size_t size, bool little_endian)
      : data_(data), size_(size), little_(little_endian) {}

  bool u16(std::size_t at, uint16_t& out) const {
    if (at > size_ || size_ - at < 2) return false;
    const uint8_t* p = data_ + at;
    out = little_ ? static_cast<uint16_t>(p[0] | (p[1] << 8)) : static_cast<uint16_t>((p[0] << 8) | p[1]);
    return true;
  }
  bool u32(std::size_t at, uint32_t& out) const {
    if (at > size_ || size_ - at < 4) return false;
    const uint8_t* p = data_ + at;
    out = little_ ? (uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24)
                  : (uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]});
    return true;
  }

 private:
  const uint8_t* data_;
  std::size_t size_;
  bool little_;
};

constexpr uint16_t kOrientationTag = 0x0112;
constexpr uint16_t kTypeShort = 3;
constexpr std::size_t kIfdEntryBytes = 12;

}  // namespace

int exif_orientation(const uint8_t* app1, std::size_t size) {
  static const uint8_t kExifHeader[6] = {'E', 'x', 'i', 'f', 0, 0};
  if (app1 == nullptr || size < sizeof(kExifHeader) + 8) return 1;
  if (std::memcmp(app1, kExifHeader, sizeof(kExifHeader)) != 0) return 1;
  const uint8_t* tiff = app1 + sizeof(kExifHeader);
  const std::size_t tiff_size = size - sizeof(kExifHeader);

  bool little = false;
  if (tiff[0] == 'I' && tiff[1] == 'I') {
    little = true;
  } else if (tiff[0] == 'M' && tiff[1] == 'M') {
    little = false;
  } else {
    return 1;
  }
  const TiffReader r(tiff, tiff_size, little);
  uint16_t magic = 0;
  uint32_t ifd0 = 0;
  if (!r.u16(2, magic) || magic != 42 || !r.u32(4, ifd0)) return 1;

  uint16_t entries = 0;
  if (!r.u16(ifd0, entries)) return 1;
  // An IFD that claims more entries than the block holds is corrupt as a whole: ignore it.
  if (std::size_t{ifd0} + 2 + std::size_t{entries} * kIfdEntryBytes > tiff_size) return 1;
  for (uint32_t i = 0; i < entries; ++i) {
    const std::size_t entry = std::size_t{ifd0} + 2 + std::size_t{i} * kIfdEntryBytes;
    uint16_t tag = 0, type = 0;
    uint32_t count = 0;
    if (!r.u16(entry, tag) || !r.u16(entry + 2, type) || !r.u32(entry + 4, count)) return 1;
    if (tag != kOrientationTag) continue;
    uint16_t value = 0;
    // A SHORT with count 1 sits in the first two bytes of the 4-byte value field.
    if (type != kTypeShort || count != 1 || !r.u16(entry + 8, value)) return 1;
    return (value >= 1 && value <= 8) ? value : 1;
  }
  return 1;
}

Image apply_orientation(const Image& im, int orientation) {
  AE_CHECK(orientation >= 1 && orientation <= 8, "apply_orientation: EXIF orientation " << orientation
                                                     << " is not in 1..8");
  check_image(im, "apply_orientation");
  if (orientation == 1) return im;
  const int w = im.width, h = im.height;
  const bool swaps = orientation >= 5;
  Image out;
  out.width = swaps ? h : w;
  out.height = swaps ? w : h;
  out.rgb.resize(im.rgb.size());
  for (int oy = 0; oy < out.height; ++oy) {
    for (int ox = 0; ox < out.width; ++ox) {
      int sx = ox, sy = oy;  // source pixel that lands at (ox, oy)
      switch (orientation) {
        case 2: sx = w - 1 - ox; sy = oy; break;
        case 3: sx = w - 1 - ox; sy = h - 1 - oy; break;
        case 4: sx = ox; sy = h - 1 - oy; break;
        case 5: sx = oy; sy = ox; break;
        case 6: sx = oy; sy = h - 1 - ox; break;
        case 7: sx = w - 1 - oy; sy = h - 1 - ox; break;
        case 8: sx = w - 1 - oy; sy = ox; break;
        default: break;
      }
      const std::size_t src = (std::size_t(sy) * w + sx) * 3;
      const std::size_t dst = (std::size_t(oy) * out.width + ox) * 3;
      out.rgb[dst] = im.rgb[src];
      out.rgb[dst + 1] = im.rgb[src + 1];
      out.rgb[dst + 2] = im.rgb[src + 2];
    }
  }
  return out;
}

}  // namespace ae::img

#pragma once
// EXIF orientation: reading tag 0x0112 from a JPEG APP1 segment and turning pixels upright.
//
// The parser is defensive: every offset is bounds-checked, both byte orders ("II" little-endian,
// "MM" big-endian) are handled, and anything malformed simply means "no orientation" (1), since
// a damaged EXIF block should not make an otherwise good photo unreadable.
#include <cstddef>
#include <cstdint>

#include "train/image.h"

namespace ae::img {

// `app1` is the APP1 payload as libjpeg saves it (starting with "Exif\0\0", without the marker
// and length bytes). Returns the orientation 1..8, or 1 when absent, invalid or out of range.
int exif_orientation(const uint8_t* app1, std::size_t size);

// Applies an EXIF orientation so the result is upright, exactly as PIL's ImageOps.exif_transpose:
// 1 identity, 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose (main diagonal),
// 6 rotate 90 clockwise, 7 transverse (anti-diagonal), 8 rotate 90 counter-clockwise.
// Orientations 5..8 swap width and height. Other values are an error.
Image apply_orientation(const Image& im, int orientation);

}  // namespace ae::img

#include "runtime/crc32.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>

namespace ae {

uint32_t crc32(const void* data, std::size_t bytes, uint32_t crc) {
  // zlib's length argument is a 32-bit uInt, so tensors over 4 GiB are fed in pieces.
  constexpr std::size_t kMaxChunk = std::size_t{1} << 30;
  const auto* p = static_cast<const Bytef*>(data);
  uLong running = crc;
  while (bytes > 0) {
    const std::size_t n = std::min(bytes, kMaxChunk);
    running = ::crc32(running, p, static_cast<uInt>(n));
    p += n;
    bytes -= n;
  }
  return static_cast<uint32_t>(running);
}

std::string crc32_hex(uint32_t crc) {
  char text[9];
  std::snprintf(text, sizeof(text), "%08x", static_cast<unsigned>(crc));
  return text;
}

}  // namespace ae

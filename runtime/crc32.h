#pragma once
// CRC-32 (the zlib / PNG / zip polynomial), used to detect corrupted checkpoint tensors.
#include <cstddef>
#include <cstdint>
#include <string>

namespace ae {

// CRC-32 of `bytes` bytes at `data`. Pass a previous result as `crc` to continue a running
// checksum over several pieces: crc32(b, nb, crc32(a, na)) == crc32 of a followed by b.
uint32_t crc32(const void* data, std::size_t bytes, uint32_t crc = 0);

// Eight lowercase hex digits, zero-padded ("cbf43926").
std::string crc32_hex(uint32_t crc);

}  // namespace ae

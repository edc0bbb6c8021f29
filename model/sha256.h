#pragma once
// SHA-256 (FIPS 180-4), streaming. Used for the generic-model digest that ties a user file to the
// generic model it was trained on (model/user_file.h); not for security.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ae {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t bytes);
  void update(const std::string& text) { update(text.data(), text.size()); }
  // The 32-byte digest; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();
  // finish() as 64 lowercase hex digits.
  std::string finish_hex();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

}  // namespace ae

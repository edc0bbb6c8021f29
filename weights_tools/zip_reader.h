#pragma once
// A read-only view of a zip archive as PyTorch writes it: members are found through the central
// directory (classic and zip64 end records, zip64 extra fields), never by streaming local headers,
// because torch's writer leaves CRC and sizes at 0 in the local headers. Only STORED members can be
// read; their bytes are returned in place from a memory mapping of the file.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ae::weights {

// Read-only memory mapping of a whole file (an empty file maps to an empty span).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

struct ZipMember {
  std::string name;
  uint16_t method = 0;  // 0 = STORED, 8 = DEFLATE, ...
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the member's data (after the local header)
};

class ZipReader {
 public:
  // Parses the end records and the central directory of `bytes` (which must outlive the reader).
  // `path` is only used in error messages. Throws ae::Error when the archive is malformed.
  ZipReader(std::span<const uint8_t> bytes, std::string path);

  const std::vector<ZipMember>& members() const { return members_; }
  // nullptr when there is no member of that exact name.
  const ZipMember* find(const std::string& name) const;

  // The member's bytes, in place. Refuses compressed members. With verify_crc the CRC-32 from the
  // central directory is checked.
  std::span<const uint8_t> data(const ZipMember& member, bool verify_crc) const;

 private:
  void read_central_directory(uint64_t cd_offset, uint64_t cd_size, uint64_t count);
  void locate_data(ZipMember& member) const;

  std::span<const uint8_t> bytes_;
  std::string path_;
  std::vector<ZipMember> members_;
};

}  // namespace ae::weights

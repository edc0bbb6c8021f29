#include "weights_tools/zip_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "runtime/error.h"

namespace ae::weights {

static_assert(std::endian::native == std::endian::little, "the zip and pickle readers assume a little-endian host");

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr std::size_t kEndSize = 22;
constexpr std::size_t kZip64LocatorSize = 20;
constexpr std::size_t kZip64EndSize = 56;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;

// Little-endian load of a T at `offset`; the caller has checked the range.
template <typename T> T load(std::span<const uint8_t> b, uint64_t offset) {
  T v;
  std::memcpy(&v, b.data() + offset, sizeof(T));
  return v;
}

// True when [offset, offset + length) lies inside a buffer of `size` bytes (overflow-safe).
bool in_range(uint64_t offset, uint64_t length, uint64_t size) { return offset <= size && length <= size - offset; }

const char* method_name(uint16_t method) {
  switch (method) {
    case 8: return "DEFLATE";
    case 9: return "DEFLATE64";
    case 12: return "BZIP2";
    case 14: return "LZMA";
    case 93: return "ZSTD";
    default: return "unknown";
  }
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  AE_CHECK(fd >= 0, path << ": cannot open: " << std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const int err = errno;
    ::close(fd);
    AE_FAIL(path << ": not a regular file" << (err ? std::string(" (") + std::strerror(err) + ")" : ""));
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      AE_FAIL(path << ": cannot map " << size_ << " bytes: " << std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

ZipReader::ZipReader(std::span<const uint8_t> bytes, std::string path) : bytes_(bytes), path_(std::move(path)) {
  const uint64_t size = bytes_.size();
  AE_CHECK(size >= kEndSize, path_ << ": zip: file of " << size << " bytes is too short to hold an end record");

  // The classic end record sits at the end, followed only by its comment (at most 65535 bytes).
  // Scan backwards and accept the first signature whose comment length reaches exactly to the end.
  uint64_t end_pos = size;  // "not found"
  const uint64_t lowest = size - kEndSize > 0xFFFF ? size - kEndSize - 0xFFFF : 0;
  for (uint64_t pos = size - kEndSize + 1; pos-- > lowest;) {
    if (load<uint32_t>(bytes_, pos) == kEndSig && pos + kEndSize + load<uint16_t>(bytes_, pos + 20) == size) {
      end_pos = pos;
      break;
    }
  }
  AE_CHECK(end_pos != size, path_ << ": zip: no end-of-central-directory record (the file is truncated or not a zip)");

  const uint16_t disk = load<uint16_t>(bytes_, end_pos + 4);
  const uint16_t cd_disk = load<uint16_t>(bytes_, end_pos + 6);
  uint64_t count = load<uint16_t>(bytes_, end_pos + 10);
  uint64_t cd_size = load<uint32_t>(bytes_, end_pos + 12);
  uint64_t cd_offset = load<uint32_t>(bytes_, end_pos + 16);
  uint64_t cd_limit = end_pos;  // the central directory must end before the end records

  // Zip64: the locator sits right before the classic end record and points at the zip64 end record.
  if (end_pos >= kZip64LocatorSize && load<uint32_t>(bytes_, end_pos - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint64_t locator = end_pos - kZip64LocatorSize;
    const uint64_t z64_pos = load<uint64_t>(bytes_, locator + 8);
    AE_CHECK(in_range(z64_pos, kZip64EndSize, locator) && load<uint32_t>(bytes_, z64_pos) == kZip64EndSig,
             path_ << ": zip: the zip64 locator at byte " << locator << " points at byte " << z64_pos
                   << ", where there is no zip64 end record (truncated or corrupt file)");
    AE_CHECK(load<uint32_t>(bytes_, z64_pos + 16) == 0 && load<uint32_t>(bytes_, z64_pos + 20) == 0,
             path_ << ": zip: multi-disk archives are not supported");
    count = load<uint64_t>(bytes_, z64_pos + 32);
    cd_size = load<uint64_t>(bytes_, z64_pos + 40);
    cd_offset = load<uint64_t>(bytes_, z64_pos + 48);
    cd_limit = z64_pos;
  } else {
    AE_CHECK(disk == 0 && cd_disk == 0, path_ << ": zip: multi-disk archives are not supported");
    AE_CHECK(cd_size != 0xFFFFFFFFu && cd_offset != 0xFFFFFFFFu && count != 0xFFFF,
             path_ << ": zip: the end record says zip64 but there is no zip64 locator");
  }
  AE_CHECK(in_range(cd_offset, cd_size, cd_limit),
           path_ << ": zip: central directory (offset " << cd_offset << ", " << cd_size
                 << " bytes) does not fit before the end records at byte " << cd_limit
                 << " (truncated or corrupt file)");
  AE_CHECK(count <= cd_size / kCentralHeaderSize,
           path_ << ": zip: " << count << " members cannot fit in a central directory of " << cd_size << " bytes");
  read_central_directory(cd_offset, cd_size, count);
}

void ZipReader::read_central_directory(uint64_t cd_offset, uint64_t cd_size, uint64_t count) {
  const auto cd = bytes_.subspan(cd_offset, cd_size);
  std::unordered_set<std::string> names;
  members_.reserve(count);
  uint64_t pos = 0;
  for (uint64_t i = 0; i < count; ++i) {
    AE_CHECK(in_range(pos, kCentralHeaderSize, cd.size()) && load<uint32_t>(cd, pos) == kCentralHeaderSig,
             path_ << ": zip: central directory entry " << i << " at byte " << cd_offset + pos << " is corrupt");
    ZipMember m;
    const uint16_t flags = load<uint16_t>(cd, pos + 8);
    m.method = load<uint16_t>(cd, pos + 10);
    m.crc32 = load<uint32_t>(cd, pos + 16);
    m.compressed_size = load<uint32_t>(cd, pos + 20);
    m.size = load<uint32_t>(cd, pos + 24);
    const uint16_t name_len = load<uint16_t>(cd, pos + 28);
    const uint16_t extra_len = load<uint16_t>(cd, pos + 30);
    const uint16_t comment_len = load<uint16_t>(cd, pos + 32);
    const uint16_t start_disk = load<uint16_t>(cd, pos + 34);
    m.local_header_offset = load<uint32_t>(cd, pos + 42);
    const uint64_t name_pos = pos + kCentralHeaderSize;
    AE_CHECK(in_range(name_pos, uint64_t{name_len} + extra_len + comment_len, cd.size()),
             path_ << ": zip: central directory entry " << i << " runs past the end of the directory");
    m.name.assign(reinterpret_cast<const char*>(cd.data() + name_pos), name_len);
    AE_CHECK((flags & 1) == 0, path_ << ": zip: member '" << m.name << "' is encrypted");

    // Zip64 extra field: holds, in this order, those of size, compressed size and offset whose
    // 32-bit fields are saturated (and the start disk when that is saturated).
    uint64_t extra_pos = name_pos + name_len;
    const uint64_t extra_end = extra_pos + extra_len;
    while (extra_pos + 4 <= extra_end) {
      const uint16_t id = load<uint16_t>(cd, extra_pos);
      const uint16_t len = load<uint16_t>(cd, extra_pos + 2);
      AE_CHECK(extra_pos + 4 + len <= extra_end,
               path_ << ": zip: member '" << m.name << "' has an extra field running past its end");
      if (id == kZip64ExtraId) {
        uint64_t field = extra_pos + 4;
        const uint64_t field_end = field + len;
        auto next = [&](uint64_t& value, const char* what) {
          AE_CHECK(field + 8 <= field_end,
                   path_ << ": zip: member '" << m.name << "' has a zip64 extra field without its " << what);
          value = load<uint64_t>(cd, field);
          field += 8;
        };
        if (m.size == 0xFFFFFFFFu) next(m.size, "size");
        if (m.compressed_size == 0xFFFFFFFFu) next(m.compressed_size, "compressed size");
        if (m.local_header_offset == 0xFFFFFFFFu) next(m.local_header_offset, "offset");
      }
      extra_pos += 4 + len;
    }
    AE_CHECK(start_disk == 0 || start_disk == 0xFFFF, path_ << ": zip: multi-disk archives are not supported");
    AE_CHECK(names.insert(m.name).second, path_ << ": zip: member '" << m.name << "' appears twice");
    locate_data(m);
    members_.push_back(std::move(m));
    pos = extra_end + comment_len;
  }
}

// The data starts after the local header, whose name and extra lengths may differ from the
// central directory's (torch pads the local extra field so data is 64-byte aligned).
void ZipReader::locate_data(ZipMember& m) const {
  const uint64_t lho = m.local_header_offset;
  AE_CHECK(in_range(lho, kLocalHeaderSize, bytes_.size()) && load<uint32_t>(bytes_, lho) == kLocalHeaderSig,
           path_ << ": zip: member '" << m.name << "': no local header at byte " << lho
                 << " (truncated or corrupt file)");
  const uint16_t name_len = load<uint16_t>(bytes_, lho + 26);
  const uint16_t extra_len = load<uint16_t>(bytes_, lho + 28);
  const uint64_t name_pos = lho + kLocalHeaderSize;
  AE_CHECK(in_range(name_pos, uint64_t{name_len} + extra_len, bytes_.size()),
           path_ << ": zip: member '" << m.name << "': local header at byte " << lho << " runs past the end of the file");
  const std::string local_name(reinterpret_cast<const char*>(bytes_.data() + name_pos), name_len);
  AE_CHECK(local_name == m.name, path_ << ": zip: member '" << m.name << "': its local header at byte " << lho
                                       << " names '" << local_name << "' (corrupt file)");
  m.data_offset = name_pos + name_len + extra_len;
  AE_CHECK(in_range(m.data_offset, m.compressed_size, bytes_.size()),
           path_ << ": zip: member '" << m.name << "': " << m.compressed_size << " bytes at byte " << m.data_offset
                 << " run past the end of the " << bytes_.size() << "-byte file (truncated file)");
}

const ZipMember* ZipReader::find(const std::string& name) const {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const ZipMember& m) { return m.name == name; });
  return it == members_.end() ? nullptr : &*it;
}

std::span<const uint8_t> ZipReader::data(const ZipMember& m, bool verify_crc) const {
  AE_CHECK(m.method == 0, path_ << ": zip: member '" << m.name << "' is compressed (method " << m.method << ", "
                                << method_name(m.method)
                                << "); PyTorch writes every member STORED, so this file was re-packed by another "
                                   "tool. Re-save it with torch.save(model.state_dict(), path)");
  AE_CHECK(m.size == m.compressed_size, path_ << ": zip: STORED member '" << m.name << "' has size " << m.size
                                              << " but compressed size " << m.compressed_size);
  const auto span = bytes_.subspan(m.data_offset, m.size);
  if (verify_crc) {
    // zlib's crc32 takes a uInt length: feed large members in chunks.
    uLong crc = ::crc32(0L, Z_NULL, 0);
    for (std::size_t done = 0; done < span.size();) {
      const std::size_t chunk = std::min<std::size_t>(span.size() - done, std::size_t{1} << 30);
      crc = ::crc32(crc, span.data() + done, static_cast<uInt>(chunk));
      done += chunk;
    }
    AE_CHECK(crc == m.crc32, path_ << ": zip: member '" << m.name << "' fails its CRC-32 check (stored 0x" << std::hex
                                   << m.crc32 << ", computed 0x" << crc << std::dec << "): the file is corrupt");
  }
  return span;
}

}  // namespace ae::weights

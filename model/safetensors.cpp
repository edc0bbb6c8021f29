#include "model/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/atomic_file.h"
#include "runtime/crc32.h"

namespace ae::st {

// Tensor bytes are copied between memory and the file as they are; the format is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the limit Python's safetensors uses
// A safetensors header nests 3 deep (object, entry, shape array). Deeper JSON is refused while it
// is parsed, so a hostile header cannot build millions of nested values (or recurse in dump()).
constexpr int kMaxJsonDepth = 16;
constexpr std::size_t kMaxQuotedJson = 200;  // characters of a JSON value quoted in an error
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kCrcPrefix = "crc32.";

// Headers are parsed keeping their key order: it breaks ties between zero-size tensors that share
// an offset, so a file we wrote reads back in exactly the order it was written.
using json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// dtypes: what a file may hold and what it becomes in memory.

enum class FileDType { F32, F64, F16, BF16, I64, I32, U8 };

struct FileDTypeInfo {
  FileDType id;
  const char* name;
  std::size_t itemsize;
  DType loaded_as;
};

constexpr FileDTypeInfo kFileDTypes[] = {
    {FileDType::F32, "F32", 4, DType::f32},  {FileDType::F64, "F64", 8, DType::f32},
    {FileDType::F16, "F16", 2, DType::f32},  {FileDType::BF16, "BF16", 2, DType::f32},
    {FileDType::I64, "I64", 8, DType::i64},  {FileDType::I32, "I32", 4, DType::i64},
    {FileDType::U8, "U8", 1, DType::u8},
};

const FileDTypeInfo* find_file_dtype(const std::string& name) {
  for (const FileDTypeInfo& info : kFileDTypes)
    if (name == info.name) return &info;
  return nullptr;
}

const char* file_dtype_for(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::bf16: return "BF16";
  }
  return "?";
}

// A file dtype is stored as-is when it is exactly our in-memory type.
bool stored_natively(const FileDTypeInfo& info) {
  return info.id == FileDType::F32 || info.id == FileDType::I64 || info.id == FileDType::U8;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  const uint32_t bits = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13))  // inf / nan
                                       : (sign | ((exponent + 112) << 23) | (mantissa << 13));
  return std::bit_cast<float>(bits);
}

template <typename T> T load_unaligned(const unsigned char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// ---------------------------------------------------------------------------------------------
// Writing.

void check_writable(const std::string& path, const NamedTensors& tensors,
                    const std::map<std::string, std::string>& metadata) {
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    AE_CHECK(name != kMetadataKey,
             "cannot write '" << path << "': a tensor may not be named '" << kMetadataKey << "'");
    AE_CHECK(names.insert(name).second, "cannot write '" << path << "': tensor name '" << name << "' appears twice");
    AE_CHECK(tensor.defined(), "cannot write '" << path << "': tensor '" << name << "' is undefined");
  }
  for (const auto& entry : metadata)
    AE_CHECK(entry.first.rfind(kCrcPrefix, 0) != 0,
             "cannot write '" << path << "': metadata key '" << entry.first << "' is reserved (keys starting '"
                              << kCrcPrefix << "' hold the tensors' checksums)");
}

// The header text, padded with spaces so that the data section starts 8-byte aligned.
std::string make_header(const std::string& path, const NamedTensors& host_tensors,
                        const std::map<std::string, std::string>& metadata) {
  json meta = json::object();
  for (const auto& [key, value] : metadata) meta[key] = value;
  json entries = json::object();
  uint64_t offset = 0;
  for (const auto& [name, tensor] : host_tensors) {
    const uint64_t end = offset + tensor.nbytes();
    entries[name] = {{"dtype", file_dtype_for(tensor.dtype())},
                     {"shape", tensor.shape()},
                     {"data_offsets", {offset, end}}};
    meta[crc_key(name)] = crc32_hex(crc32(tensor.raw(), tensor.nbytes()));
    offset = end;
  }
  json header = json::object();
  if (!meta.empty()) header[kMetadataKey] = meta;
  for (auto& item : entries.items()) header[item.key()] = std::move(item.value());

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    AE_FAIL("cannot write '" << path << "': tensor names and metadata must be valid UTF-8 (" << e.what() << ")");
  }
  const std::size_t unaligned = (8 + text.size()) % 8;
  if (unaligned != 0) text.append(8 - unaligned, ' ');
  return text;
}

// ---------------------------------------------------------------------------------------------
// Reading.

struct CloseFile {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, CloseFile>;

// One tensor entry of the header, validated on its own (not yet against the others).
struct Entry {
  std::string name;
  const FileDTypeInfo* dtype = nullptr;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Everything a reader needs to say where a problem is.
struct Where {
  const std::string& path;
  std::string prefix() const { return "safetensors file '" + path + "': "; }
};

// A JSON value for an error message, cut to kMaxQuotedJson characters.
std::string quote(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > kMaxQuotedJson) text = text.substr(0, kMaxQuotedJson) + "... (" + std::to_string(text.size()) + " characters)";
  return text;
}

json parse_header(const Where& where, const std::string& text) {
  // nlohmann keeps the last of two equal keys silently; a checkpoint naming a tensor twice is
  // ambiguous, so track the keys of every open object and refuse repeats.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const json::parser_callback_t track_keys = [&](int depth, json::parse_event_t event, json& parsed) {
    AE_CHECK(depth < kMaxJsonDepth, where.prefix() << "header nests JSON deeper than " << kMaxJsonDepth
                                                   << " levels (a safetensors header has 3)");
    if (event == json::parse_event_t::object_start) open_objects.emplace_back();
    if (event == json::parse_event_t::object_end && !open_objects.empty()) open_objects.pop_back();
    if (event == json::parse_event_t::key && !open_objects.empty() && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, track_keys);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 9e524 (found by fuzz/safetensors)
    AE_FAIL(where.prefix() << "header (" << text.size() << " bytes) is not valid JSON: " << e.what());
  }
  AE_CHECK(header.is_object(), where.prefix() << "header must be a JSON object, found a JSON " << header.type_name());
  AE_CHECK(duplicate.empty(), where.prefix() << "header has the key '" << duplicate << "' twice");
  return header;
}

uint64_t parse_unsigned(const Where& where, const std::string& name, const char* field, const json& value) {
  AE_CHECK(value.is_number_unsigned(), where.prefix() << "tensor '" << name << "': " << field
                                                      << " must hold non-negative integers, found " << quote(value));
  return value.get<uint64_t>();
}

Entry parse_entry(const Where& where, const std::string& name, const json& value) {
  const std::string what = where.prefix() + "tensor '" + name + "': ";
  AE_CHECK(value.is_object(), what << "entry must be a JSON object, found " << quote(value));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    AE_CHECK(value.contains(field), what << "entry has no \"" << field << "\" field");

  Entry entry;
  entry.name = name;
  const json& dtype = value["dtype"];
  AE_CHECK(dtype.is_string(), what << "dtype must be a string, found " << quote(dtype));
  entry.dtype = find_file_dtype(dtype.get<std::string>());
  AE_CHECK(entry.dtype != nullptr, what << "unsupported dtype '" << dtype.get<std::string>()
                                        << "' (supported: F32, F64, F16, BF16, I64, I32, U8)");

  const json& shape = value["shape"];
  AE_CHECK(shape.is_array(), what << "shape must be an array, found " << quote(shape));
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : shape) {
    const uint64_t dim = parse_unsigned(where, name, "shape", d);
    AE_CHECK(dim <= static_cast<uint64_t>(INT64_MAX), what << "dimension " << dim << " is too large");
    entry.shape.push_back(static_cast<int64_t>(dim));
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
  }
  uint64_t bytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, entry.dtype->itemsize, &bytes);
  AE_CHECK(!overflow, what << "shape " << quote(shape) << " has more bytes than any file can hold");

  const json& offsets = value["data_offsets"];
  AE_CHECK(offsets.is_array() && offsets.size() == 2,
           what << "data_offsets must be [begin, end], found " << quote(offsets));
  entry.begin = parse_unsigned(where, name, "data_offsets", offsets[0]);
  entry.end = parse_unsigned(where, name, "data_offsets", offsets[1]);
  AE_CHECK(entry.begin <= entry.end,
           what << "data_offsets [" << entry.begin << ", " << entry.end << "] end before they begin");
  AE_CHECK(entry.end - entry.begin == bytes,
           what << "shape " << quote(shape) << " of " << entry.dtype->name << " needs " << bytes
                << " bytes but data_offsets [" << entry.begin << ", " << entry.end << "] hold "
                << entry.end - entry.begin);
  return entry;
}

std::map<std::string, std::string> parse_metadata(const Where& where, const json& value) {
  AE_CHECK(value.is_object(), where.prefix() << kMetadataKey << " must be a JSON object, found " << quote(value));
  std::map<std::string, std::string> metadata;
  for (const auto& item : value.items()) {
    AE_CHECK(item.value().is_string(), where.prefix() << kMetadataKey << " entry '" << item.key()
                                                      << "' must be a string, found " << quote(item.value()));
    metadata[item.key()] = item.value().get<std::string>();
  }
  return metadata;
}

// Splits the crc32.<name> entries off the user metadata and checks they name real tensors.
std::map<std::string, uint32_t> take_crcs(const Where& where, std::map<std::string, std::string>& metadata,
                                          const std::vector<Entry>& entries) {
  std::set<std::string> names;
  for (const Entry& e : entries) names.insert(e.name);
  std::map<std::string, uint32_t> crcs;
  for (auto it = metadata.begin(); it != metadata.end();) {
    if (it->first.rfind(kCrcPrefix, 0) != 0) {
      ++it;
      continue;
    }
    const std::string name = it->first.substr(std::strlen(kCrcPrefix));
    const std::string& hex = it->second;
    AE_CHECK(names.count(name), where.prefix() << "metadata '" << it->first << "' is a checksum for tensor '" << name
                                               << "', which is not in the file");
    const bool well_formed = hex.size() == 8 && std::all_of(hex.begin(), hex.end(), [](char c) {
                               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                             });
    AE_CHECK(well_formed, where.prefix() << "metadata '" << it->first << "' = '" << hex
                                         << "' is not 8 lowercase hex digits");
    crcs[name] = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
    it = metadata.erase(it);
  }
  if (!crcs.empty())
    for (const Entry& e : entries)
      AE_CHECK(crcs.count(e.name), where.prefix() << "the file has checksums but none for tensor '" << e.name << "'");
  return crcs;
}

// Sorts entries by offset and checks they tile the data section exactly: every offset inside
// it, no tensor starting inside another, no uncovered bytes between or after them.
void check_layout(const Where& where, std::vector<Entry>& entries, uint64_t data_bytes) {
  for (const Entry& e : entries)
    AE_CHECK(e.end <= data_bytes, where.prefix() << "tensor '" << e.name << "': data_offsets [" << e.begin << ", "
                                                 << e.end << "] lie outside the data section of " << data_bytes
                                                 << " bytes");
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    AE_CHECK(e.begin >= covered, where.prefix() << "tensor '" << e.name << "' [" << e.begin << ", " << e.end
                                                << ") overlaps tensor '" << previous->name << "' ["
                                                << previous->begin << ", " << previous->end << ")");
    AE_CHECK(e.begin == covered, where.prefix() << "bytes [" << covered << ", " << e.begin
                                                << ") of the data section belong to no tensor (a hole before tensor '"
                                                << e.name << "')");
    covered = e.end;
    previous = &e;
  }
  AE_CHECK(covered == data_bytes, where.prefix() << "bytes [" << covered << ", " << data_bytes
                                                 << ") at the end of the data section belong to no tensor");
}

void read_exactly(const Where& where, std::FILE* file, void* dst, std::size_t bytes, const std::string& what) {
  if (bytes == 0) return;
  const std::size_t got = std::fread(dst, 1, bytes, file);
  AE_CHECK(got == bytes, where.prefix() << "reading " << what << ": got " << got << " of " << bytes << " bytes ("
                                        << (std::ferror(file) ? std::strerror(errno) : "file ended early") << ")");
}

// Converts a widened or narrowed file dtype into our in-memory dtype.
void convert(const Where& where, const Entry& e, const unsigned char* src, Tensor& dst) {
  const int64_t n = dst.numel();
  switch (e.dtype->id) {
    case FileDType::F64: {
      float* out = dst.f32();
      for (int64_t i = 0; i < n; ++i) {
        const double v = load_unaligned<double>(src + 8 * i);
        AE_CHECK(!std::isfinite(v) || std::fabs(v) <= static_cast<double>(FLT_MAX),
                 where.prefix() << "tensor '" << e.name << "' (F64) element " << i << " = " << v
                                << " does not fit in f32");
        out[i] = static_cast<float>(v);
      }
      return;
    }
    case FileDType::F16: {
      float* out = dst.f32();
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(load_unaligned<uint16_t>(src + 2 * i));
      return;
    }
    case FileDType::BF16: {
      float* out = dst.f32();
      for (int64_t i = 0; i < n; ++i)
        out[i] = std::bit_cast<float>(static_cast<uint32_t>(load_unaligned<uint16_t>(src + 2 * i)) << 16);
      return;
    }
    case FileDType::I32: {
      int64_t* out = dst.data<int64_t>();
      for (int64_t i = 0; i < n; ++i) out[i] = load_unaligned<int32_t>(src + 4 * i);
      return;
    }
    case FileDType::F32:
    case FileDType::I64:
    case FileDType::U8: break;
  }
  AE_FAIL(where.prefix() << "internal error: no conversion for dtype " << e.dtype->name);
}

Tensor read_tensor(const Where& where, std::FILE* file, const Entry& e, const std::map<std::string, uint32_t>& crcs) {
  Tensor tensor = Tensor::empty(e.shape, e.dtype->loaded_as);
  const std::size_t bytes = e.end - e.begin;
  std::vector<unsigned char> staging;
  unsigned char* dst = static_cast<unsigned char*>(tensor.raw());
  if (!stored_natively(*e.dtype)) {
    staging.resize(bytes);
    dst = staging.data();
  }
  read_exactly(where, file, dst, bytes,
               "tensor '" + e.name + "' [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ")");
  if (auto it = crcs.find(e.name); it != crcs.end()) {
    const uint32_t actual = crc32(dst, bytes);
    AE_CHECK(actual == it->second, where.prefix() << "tensor '" << e.name << "' [" << e.begin << ", " << e.end
                                                   << ") is corrupted: CRC-32 " << crc32_hex(actual)
                                                   << ", header says " << crc32_hex(it->second));
  }
  if (!stored_natively(*e.dtype)) convert(where, e, dst, tensor);
  return tensor;
}

}  // namespace

std::string crc_key(const std::string& tensor_name) { return kCrcPrefix + tensor_name; }

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_writable(path, tensors, metadata);
  NamedTensors host;
  host.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) host.emplace_back(name, tensor.to(Device::cpu()));
  const std::string header = make_header(path, host, metadata);

  atomic_write(path, [&](std::FILE* file) {
    unsigned char length[8];
    const uint64_t n = header.size();
    std::memcpy(length, &n, 8);  // little-endian host (static_assert above)
    write_all(file, length, 8, path);
    write_all(file, header.data(), header.size(), path);
    for (const auto& item : host) write_all(file, item.second.raw(), item.second.nbytes(), path);
  });
}

SafetensorsFile read_safetensors(const std::string& path) {
  const Where where{path};
  FilePtr file(std::fopen(path.c_str(), "rb"));
  AE_CHECK(file, where.prefix() << "cannot open: " << std::strerror(errno));
  struct stat info {};
  AE_CHECK(::fstat(::fileno(file.get()), &info) == 0, where.prefix() << "cannot stat: " << std::strerror(errno));
  AE_CHECK(S_ISREG(info.st_mode), where.prefix() << "not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(info.st_size);
  AE_CHECK(file_bytes >= 8, where.prefix() << "file is " << file_bytes
                                           << " bytes, too short for the 8-byte header length");

  unsigned char length[8];
  read_exactly(where, file.get(), length, 8, "the header length");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, length, 8);
  AE_CHECK(header_bytes <= kMaxHeaderBytes, where.prefix() << "header length " << header_bytes
                                                           << " exceeds the limit of " << kMaxHeaderBytes << " bytes");
  AE_CHECK(header_bytes <= file_bytes - 8, where.prefix() << "header length " << header_bytes
                                                          << " runs past the end of the file (" << file_bytes
                                                          << " bytes): the file is truncated or not safetensors");
  std::string text(header_bytes, '\0');
  read_exactly(where, file.get(), text.data(), text.size(), "the header");
  const json header = parse_header(where, text);

  SafetensorsFile result;
  std::vector<Entry> entries;
  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey)
      result.metadata = parse_metadata(where, item.value());
    else
      entries.push_back(parse_entry(where, item.key(), item.value()));
  }
  const std::map<std::string, uint32_t> crcs = take_crcs(where, result.metadata, entries);
  check_layout(where, entries, file_bytes - 8 - header_bytes);

  // The entries now tile the data section in order, so the tensors are read front to back.
  for (const Entry& e : entries) result.tensors.emplace_back(e.name, read_tensor(where, file.get(), e, crcs));
  return result;
}

}  // namespace ae::st

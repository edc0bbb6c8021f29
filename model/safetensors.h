#pragma once
// safetensors checkpoint files (https://github.com/huggingface/safetensors):
//   8 bytes   little-endian u64 N, the header length
//   N bytes   JSON object: { "__metadata__": {str: str}, "<name>": {"dtype": "F32",
//             "shape": [..], "data_offsets": [begin, end]}, ... }, padded with spaces
//   rest      the tensors' bytes, little-endian, offsets relative to the start of this section;
//             the section is covered exactly, with no holes and no overlaps.
// We add one metadata entry per tensor, "crc32.<name>", so corrupted bytes are caught on load.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace ae::st {

using NamedTensors = std::vector<std::pair<std::string, ae::Tensor>>;  // order preserved

// Writes tensors (f32 -> "F32", i64 -> "I64", u8 -> "U8", bf16 -> "BF16", read back as f32; device
// tensors are copied to the host)
// in the order given, with the string metadata under "__metadata__" plus one entry per tensor
// "crc32.<name>" = 8 lowercase hex digits of the CRC-32 of that tensor's bytes. Atomic
// (runtime/atomic_file.h). The data section starts 8-byte aligned (header padded with spaces).
// Refuses duplicate or reserved names, undefined tensors, and metadata keys starting "crc32.".
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata);

struct SafetensorsFile {
  NamedTensors tensors;                         // in file (offset) order
  std::map<std::string, std::string> metadata;  // user metadata, without the crc32.* entries
};

// Reads and validates everything before returning: file size >= 8, header length sane (< 100 MB
// and within the file), header is a JSON object without duplicate keys, every entry has dtype,
// shape and data_offsets, dtype supported (F32, F64, F16, BF16 -> f32; I64, I32 -> i64; U8 -> u8;
// anything else refused by name), numel * itemsize == end - begin, offsets within the data
// section, no overlaps and no holes, CRC-32 matching when present (a file without crc entries,
// e.g. written by Python's safetensors library, is accepted; a file with some must have all).
// Errors (ae::Error) say what and where: path, tensor name, offsets.
SafetensorsFile read_safetensors(const std::string& path);

// The metadata key holding a tensor's CRC-32.
std::string crc_key(const std::string& tensor_name);

}  // namespace ae::st

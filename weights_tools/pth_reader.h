#pragma once
// Reads PyTorch `.pth` checkpoints (the zip format of torch >= 1.6) without Python: the zip
// central directory (zip_reader.h), a restricted unpickler for data.pkl (unpickler.h) that never
// executes anything, and the raw little-endian storages. Other torch formats (legacy non-zip,
// the ancient tar format, TorchScript archives, whole-model pickles) are refused with a message
// saying what the file is and how to re-save it.
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace ae::weights {

using NamedTensors = std::vector<std::pair<std::string, ae::Tensor>>;  // file order preserved

struct PthOptions {
  bool verify_crc = true;  // check the CRC-32 of data.pkl and of every storage that is read
  // The tensors of a file may hold at most 2 x (file size in bytes) + extra_elements elements in
  // all (each tensor is bounded by its storage, but any number of keys may name one storage, and a
  // stride-0 view may expand up to 2^28 elements): more is refused before it is allocated.
  uint64_t extra_elements = uint64_t{1} << 28;
};

// Reads a PyTorch zip checkpoint holding a state dict (or {"state_dict": sd} / {"model": sd} wrappers,
// possibly with other non-tensor entries like "epoch": 3 that are ignored). Returns CPU tensors in
// PyTorch's layout (e.g. conv weights OIHW), made contiguous (honouring storage offset and strides);
// float32/float64/float16/bfloat16 become f32, int64 (and int32/int16/int8/uint8/bool) become i64.
// Never executes anything from the file. Throws ae::Error with a clear message otherwise.
NamedTensors read_pth(const std::string& path);
NamedTensors read_pth(const std::string& path, const PthOptions& options);

}  // namespace ae::weights

#pragma once
// Model checkpoints as safetensors with PyTorch names and layouts (conv weights OIHW), so a file
// aesthete writes loads into PyTorch with load_state_dict (DESIGN.md "Files").
//
// __metadata__ of a model file:
//   format = "aesthete", format_version = "1", kind = "model",
//   head = seed|linear|imagenet, adapters = true|false,
//   target_mean, target_std (the z-score normalisation of the training targets),
//   plus crc32.<name> per tensor (added by model/safetensors.h).
// Reading PyTorch `.pth` files needs weights_tools (a higher layer): weights_tools/model_file.h
// detects the format by content and dispatches to read_checkpoint() or the .pth reader.
#include <map>
#include <memory>
#include <string>

#include "model/resnet18.h"

namespace ae::model {

inline constexpr const char* kCheckpointFormat = "aesthete";
inline constexpr const char* kCheckpointVersion = "1";

// Mean and standard deviation of the FLICKR-AES training scores: predictions are z-scores,
// score = mean + std * z.
struct TargetNorm {
  double mean = 3.0183403576;
  double std = 1.1001719588;
};

enum class FileFormat { safetensors, pth_zip, unknown };
// Looks at the first bytes: "PK\x03\x04" is a zip (PyTorch >= 1.6), an 8-byte header length
// followed by '{' is safetensors. Throws ae::Error when the file cannot be opened.
FileFormat sniff_format(const std::string& path);

// A checkpoint read and validated, before it becomes a model.
struct Checkpoint {
  ModelConfig config;                          // head and adapters as detected from the names
  TargetNorm norm;
  NamedTensors tensors;                        // PyTorch names and layouts
  std::map<std::string, std::string> metadata; // as stored (empty for .pth files)
};

// Writes `model` with the metadata above (plus `extra` entries). Atomic.
void save_checkpoint(const std::string& path, ResNet18& model, const TargetNorm& norm = {},
                     const std::map<std::string, std::string>& extra = {});

// Reads a safetensors model file: every tensor validated, the layout detected from names and
// shapes (detect_layout), and any head/adapters metadata checked against it.
Checkpoint read_checkpoint(const std::string& path);

// Builds a model of the checkpoint's configuration holding its weights (eval mode, CPU).
// `dropout` and `seed` come from `base` (its head/adapters fields are ignored).
std::unique_ptr<ResNet18> make_model(const Checkpoint& checkpoint, const ModelConfig& base = {});

// Turns tensors from any source (e.g. a .pth read by weights_tools) into a Checkpoint:
// detects the layout, default normalisation.
Checkpoint checkpoint_from_tensors(NamedTensors tensors, const std::string& what);

}  // namespace ae::model

#pragma once
// User files (DESIGN.md "Files"): one person's trainables, stored apart from the shared generic
// model and loaded on top of it.
//
// A user file is a safetensors file (model/safetensors.h: CRC-32 per tensor, atomic writes) with
// PyTorch names and layouts holding exactly the entries of user_file_layout(head):
//   - the residual adapters            layerL.B.adapter1.weight, layerL.B.adapter2.weight
//   - every backbone BatchNorm, whole: weight, bias (the affine parameters personalisation trains)
//     and running_mean, running_var, num_batches_tracked (train-mode forwards during
//     personalisation move them, and eval mode reads them, so the user's model cannot be
//     reproduced without them)
//   - the head: head.* for the seed head (its BatchNorm1d buffers included), fc.* for the linear
//     head (the seed head keeps the generic fc 512->1000 frozen, so fc is not stored for it)
// Everything else (the convolutions, the seed head's fc) comes from the generic model.
//
// __metadata__: format = "aesthete", format_version = "1", kind = "user", head, adapters = "true",
// generic_digest = model_digest() of the generic model the user was trained on, and user_id when
// one was given. Loading a user file on a generic model with another digest is an error.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/resnet18.h"

namespace ae::model {

inline constexpr const char* kUserFileKind = "user";

// The entries of a user file for `head`, in state-dict order.
std::vector<LayoutEntry> user_file_layout(HeadType head);

// Digest of a generic model's weights: "sha256:" followed by 64 lowercase hex digits of the
// SHA-256 of this byte stream, built from the model's state dict in torchvision order
// (ResNet18::state_entries()), leaving out the adapters and the num_batches_tracked counters:
//   for each remaining entry (every parameter and running statistic, all float32):
//     the name in UTF-8, then one 0 byte,
//     the shape in PyTorch layout as decimal sizes joined by ',' (e.g. "64,3,7,7"), then one 0 byte,
//     the values in PyTorch layout (conv weights OIHW), row-major, IEEE float32 little-endian.
// It depends only on the weights, never on the file they came from: the same weights read from a
// .pth or a .safetensors file give the same digest (Python: hashlib.sha256 over the same stream
// from model.state_dict(), weights_tools/score_reference.py). Counters are left out because they
// do not change what the model computes and old torchvision files lack them. Adapters are left out
// so that a generic model with adapters enabled (all zero: make_adapter_model) has the digest of
// the generic model; a model with non-zero adapters is a personalised model and is refused.
std::string model_digest(ResNet18& model);

struct UserFile {
  std::string path;            // for messages
  std::string user_id;         // "" when the file names no user
  HeadType head = HeadType::seed;
  std::string generic_digest;  // model_digest() of the generic model it was trained on
  NamedTensors tensors;        // exactly user_file_layout(head), PyTorch layouts
  std::map<std::string, std::string> metadata;
};

// Writes the user_file_layout entries of `user_model` (which must have adapters). Atomic.
void save_user_file(const std::string& path, ResNet18& user_model, const std::string& generic_digest,
                    const std::string& user_id = "");

// Reads and validates a user file: safetensors integrity (CRCs), format and version, kind "user"
// (a model checkpoint is refused with a hint), head, a well-formed digest, and the tensors against
// user_file_layout(head): no missing, extra or duplicated names, shapes and dtypes exact.
UserFile read_user_file(const std::string& path);

// Overwrites the user's entries of `model`, which must be a generic model with adapters enabled
// (make_adapter_model) of the file's head type, after checking that model_digest(model) is the
// file's generic_digest. `model_name` names the generic model in the error messages
// ("--model 'generic.pth'"). Nothing is changed when a check fails.
void apply_user_file(ResNet18& model, const UserFile& user, const std::string& model_name = "the generic model");

// The generic checkpoint's model with adapters enabled and zero (so it computes exactly what the
// generic model computes): the checkpoint's head, eval mode, CPU. `dropout` and `seed` come from
// `base`.
std::unique_ptr<ResNet18> make_adapter_model(const Checkpoint& generic, const ModelConfig& base = {});

}  // namespace ae::model

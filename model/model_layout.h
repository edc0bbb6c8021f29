#pragma once
// The PyTorch interoperability contract: which names and shapes a state dict has for each model
// configuration, and inferring the configuration from a state dict (DESIGN.md "Model").
// Names are torchvision's resnet18() names, unprefixed; the seed head is `head.N.*`; adapters
// are `layerL.B.adapter1.weight` / `adapter2.weight`. Shapes are PyTorch's (conv weights OIHW).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace ae::model {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

enum class HeadType {
  seed,      // fc 512->1000 kept, then the seed system's MLP head.* -> [N,1]
  linear,    // fc 512->1 -> [N,1]
  imagenet,  // plain torchvision classifier: fc 512->1000 -> [N,1000] (a pretrained backbone file)
};
const char* head_name(HeadType h);
HeadType parse_head(const std::string& text);  // "seed", "linear", "imagenet"; ae::Error otherwise

struct ModelConfig {
  HeadType head = HeadType::seed;
  bool adapters = false;
  float dropout = 0.5f;   // p of the seed head's two Dropout layers
  uint64_t seed = 0;      // initialisation and dropout streams
};

// Which part of the model an entry belongs to (what LoadOptions may leave missing).
enum class Part { backbone, adapters, head };

struct LayoutEntry {
  std::string name;
  Shape shape;          // PyTorch layout
  DType dtype = DType::f32;
  Part part = Part::backbone;
  bool optional = false;  // num_batches_tracked: absent from old torchvision files
};

// Every state-dict entry for a configuration, in torchvision's order.
std::vector<LayoutEntry> expected_layout(HeadType head, bool adapters);

struct LoadOptions {
  bool allow_missing_head = false;      // e.g. a torchvision backbone into a seed-head model
  bool allow_missing_adapters = false;  // a generic file into an adapter model (adapters stay zero)
};

// How a list of named tensors differs from a layout. check_layout and the user-file check
// compare the same way and differ only in the headline of their error message.
struct LayoutDiff {
  std::vector<std::string> unexpected;  // names the layout does not have
  std::vector<std::string> missing;     // layout names absent (and not allowed to be absent)
  std::vector<std::string> mismatched;  // "name is <tensor>, expected <shape> <dtype>"
  std::vector<std::string> duplicated;  // names given more than once (checked once)

  bool empty() const;
  // One "\n  unexpected names (N): a, b, ..." line per non-empty list, naming at most `limit`
  // entries (`mismatch_limit` for the longer mismatch lines), for below an error's headline.
  std::string describe(std::size_t limit, std::size_t mismatch_limit) const;
};

// Compares names, shapes and dtypes. Optional entries, and the parts `options` allows, may be
// absent; every other entry must be there exactly once.
LayoutDiff diff_layout(const NamedTensors& tensors, const std::vector<LayoutEntry>& layout,
                       const LoadOptions& options = {});

// Throws ae::Error naming every unexpected name, missing name, shape and dtype mismatch
// (`what` says which file or dict, for the message).
void check_layout(const NamedTensors& tensors, HeadType head, bool adapters, const LoadOptions& options,
                  const std::string& what);

struct DetectedLayout {
  HeadType head = HeadType::seed;
  bool adapters = false;
};
// Infers the head from names and fc's shape and adapters from their names, then checks the
// whole dict strictly against that layout (check_layout).
DetectedLayout detect_layout(const NamedTensors& tensors, const std::string& what);

}  // namespace ae::model

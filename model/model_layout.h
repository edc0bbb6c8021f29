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

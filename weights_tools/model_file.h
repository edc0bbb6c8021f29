#pragma once
// Opens any model file aesthete accepts, deciding the format by content, not by extension:
// a safetensors checkpoint (model/checkpoint.h) or a PyTorch zip `.pth` state dict
// (weights_tools/pth_reader.h), e.g. a torchvision resnet18 download. This lives in
// weights_tools because the .pth reader sits above model/ in the layering.
#include <string>

#include "model/checkpoint.h"

namespace ae::weights {

model::Checkpoint load_model_file(const std::string& path);

}  // namespace ae::weights

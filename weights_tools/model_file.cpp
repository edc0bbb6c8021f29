#include "weights_tools/model_file.h"

#include "weights_tools/pth_reader.h"

namespace ae::weights {

namespace {

model::Checkpoint load_any(const std::string& path) {
  switch (model::sniff_format(path)) {
    case model::FileFormat::safetensors:
      return model::read_checkpoint(path);
    case model::FileFormat::pth_zip:
      return model::checkpoint_from_tensors(read_pth(path), "'" + path + "'");
    case model::FileFormat::unknown:
      break;
  }
  // read_pth names legacy (pre-1.6) pickles, tar archives and TorchScript files precisely.
  if (path.size() >= 3 && (path.ends_with(".pt") || path.ends_with(".pth") || path.ends_with(".tar"))) {
    return model::checkpoint_from_tensors(read_pth(path), "'" + path + "'");
  }
  AE_FAIL("'" << path << "' is neither a safetensors checkpoint nor a PyTorch zip checkpoint (.pth)");
}

}  // namespace

// Whatever goes wrong here is about the file (ErrorKind::file).
model::Checkpoint load_model_file(const std::string& path) {
  return rethrow_as_file_error([&] { return load_any(path); });
}

}  // namespace ae::weights

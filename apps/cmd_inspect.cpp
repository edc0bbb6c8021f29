// aesthete inspect: what a weights file holds (name, dtype, shape per tensor) and which model
// layout it matches.
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "model/checkpoint.h"
#include "model/model_layout.h"
#include "model/safetensors.h"
#include "model/user_file.h"
#include "weights_tools/pth_reader.h"

namespace ae::app {

namespace {

// A user file: validated as a whole (read_user_file), then what it is for.
void print_user_file(const std::string& path) {
  try {
    const model::UserFile u = model::read_user_file(path);
    std::printf("layout: user file (adapters, BatchNorm and head of one user), head %s\n", model::head_name(u.head));
    std::printf("user: %s\n", u.user_id.empty() ? "<unnamed>" : u.user_id.c_str());
    std::printf("trained on generic model: %s\n", u.generic_digest.c_str());
  } catch (const Error& e) {
    std::printf("layout: a damaged user file: %s\n", e.what());
    set_exit_code(1);
  }
}

// The generic-model digest a user file trained on this model records (model/user_file.h).
void print_digest(const model::NamedTensors& tensors, const model::DetectedLayout& layout) {
  model::ModelConfig config;
  config.head = layout.head;
  config.adapters = layout.adapters;
  model::ResNet18 net(config);
  net.load_state_dict(tensors);
  try {
    std::printf("digest: %s\n", model::model_digest(net).c_str());
  } catch (const Error&) {
    std::printf("digest: none (non-zero adapters: a personalised model, not a generic one)\n");
  }
}

void run_inspect(const std::string& path) {
  model::NamedTensors tensors;
  std::map<std::string, std::string> metadata;
  const char* format = "?";
  switch (model::sniff_format(path)) {
    case model::FileFormat::safetensors: {
      st::SafetensorsFile f = st::read_safetensors(path);
      tensors = std::move(f.tensors);
      metadata = std::move(f.metadata);
      format = "safetensors";
      break;
    }
    case model::FileFormat::pth_zip:
    case model::FileFormat::unknown:  // read_pth names what the file is when it is not a state dict
      tensors = weights::read_pth(path);
      format = "PyTorch zip (.pth)";
      break;
  }
  std::printf("file: %s\nformat: %s\n", path.c_str(), format);
  for (const auto& [k, v] : metadata) {
    if (k == "metrics") continue;  // long CSV kept in training states
    std::printf("metadata: %s = %s\n", k.c_str(), v.c_str());
  }
  int64_t numbers = 0;
  std::printf("%-48s %-5s %s\n", "name", "dtype", "shape");
  for (const auto& [name, t] : tensors) {
    std::printf("%-48s %-5s %s\n", name.c_str(), dtype_name(t.dtype()), shape_str(t.shape()).c_str());
    numbers += t.numel();
  }
  std::printf("tensors: %zu, numbers: %lld\n", tensors.size(), static_cast<long long>(numbers));
  if (const auto kind = metadata.find("kind"); kind != metadata.end() && kind->second == model::kUserFileKind) {
    print_user_file(path);
    return;
  }
  try {
    const model::DetectedLayout l = model::detect_layout(tensors, "'" + path + "'");
    std::printf("layout: ResNet-18, head %s, adapters %s\n", model::head_name(l.head), l.adapters ? "yes" : "no");
    print_digest(tensors, l);
  } catch (const Error& e) {
    std::printf("layout: not a ResNet-18 model file aesthete can load as a model: %s\n", e.what());
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("inspect", "List the tensors of a .safetensors or .pth file and its model layout");
  cmd->add_option("file", *path, "Weights file")->required();
  cmd->callback([path] { run_inspect(*path); });
}

}  // namespace ae::app

// aesthete convert: any model file aesthete reads (PyTorch .pth, safetensors) to an aesthete
// safetensors checkpoint, validated against the ResNet-18 layouts on the way.
#include <memory>

#include "apps/commands.h"
#include "runtime/log.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace {

void run_convert(const std::string& in, const std::string& out) {
  const model::Checkpoint ck = weights::load_model_file(in);
  std::unique_ptr<model::ResNet18> net = model::make_model(ck);
  model::save_checkpoint(out, *net, ck.norm);
  AE_INFO("wrote " << out << ": ResNet-18, head " << model::head_name(ck.config.head) << ", adapters "
                   << (ck.config.adapters ? "yes" : "no") << ", " << ck.tensors.size() << " tensors");
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a .pth or .safetensors model to an aesthete .safetensors file");
  cmd->add_option("in", *in, "Input model (.pth state dict or .safetensors)")->required();
  cmd->add_option("out", *out, "Output .safetensors")->required();
  cmd->callback([in, out] { run_convert(*in, *out); });
}

}  // namespace ae::app

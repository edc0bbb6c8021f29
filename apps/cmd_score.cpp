// aesthete score: predicted aesthetic score of photos, as CSV on stdout.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "model/user_file.h"
#include "runtime/log.h"
#include "train/preprocess.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct ScoreArgs {
  std::string model;
  std::string user;  // a user file applied on top of `model` ("" = the generic model)
  std::string size = "auto";
  std::string device = "auto";
  int batch = 16;
  std::vector<std::string> paths;
};

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Files as given; folders expand to their JPEG/PNG files (sorted, not recursive).
std::vector<std::string> expand_paths(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& a : args) {
    if (fs::is_directory(a)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(a))
        if (e.is_regular_file() && is_image_name(e.path())) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty()) AE_WARN("no .jpg/.jpeg/.png files in folder '" << a << "'");
      out.insert(out.end(), found.begin(), found.end());
    } else {
      out.push_back(a);
    }
  }
  return out;
}

// "auto": the side the model was trained at (checkpoint metadata input_size), else 224.
int parse_size(const std::string& s, const model::Checkpoint& ck) {
  if (s == "auto") {
    auto it = ck.metadata.find("input_size");
    return it == ck.metadata.end() ? 224 : parse_size(it->second, ck);
  }
  if (s == "native") return 0;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  AE_CHECK(end && *end == '\0' && v >= 32 && v <= 4096, "--size must be native or a side in 32..4096, got '" << s << "'");
  return static_cast<int>(v);
}

void run_score(const ScoreArgs& a) {
  const Device device = resolve_device(a.device);
  const model::Checkpoint ck = weights::load_model_file(a.model);
  const int size = parse_size(a.size, ck);
  AE_CHECK(ck.config.head != model::HeadType::imagenet,
           "'" << a.model << "' is an ImageNet classifier (fc 512->1000, no aesthetics head); train one with "
                  "`aesthete train --init " << a.model << " ...`");
  std::unique_ptr<model::ResNet18> net;
  if (a.user.empty()) {
    net = model::make_model(ck);
  } else {
    // A generic file has no adapters: enable them (zero, so still the generic model, with the
    // generic digest), then overwrite the user's trainables after checking the digest.
    const model::UserFile user = model::read_user_file(a.user);
    net = model::make_adapter_model(ck);
    model::apply_user_file(*net, user, "--model '" + a.model + "'");
    AE_INFO("scoring for user " << (user.user_id.empty() ? std::string("<unnamed>") : user.user_id) << " ('"
                                << a.user << "')");
  }
  net->set_training(false);
  net->set_grad_enabled(false);
  net->to(device);

  const std::vector<std::string> files = expand_paths(a.paths);
  AE_CHECK(!files.empty(), "no images to score");
  std::printf("path,score,stars\n");
  int failures = 0;
  // Same-size inputs are batched; native sizes go one at a time.
  const std::size_t batch = size > 0 ? static_cast<std::size_t>(std::max(1, a.batch)) : 1;
  for (std::size_t begin = 0; begin < files.size(); begin += batch) {
    std::vector<std::string> names;
    std::vector<Tensor> inputs;
    for (std::size_t i = begin; i < std::min(files.size(), begin + batch); ++i) {
      try {
        inputs.push_back(img::preprocess_eval(img::read_image(files[i]), size));
        names.push_back(files[i]);
      } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        ++failures;
      }
    }
    if (inputs.empty()) continue;
    Tensor x = inputs.size() == 1 ? inputs[0] : Tensor::empty({static_cast<int64_t>(inputs.size()), size, size, 3});
    if (inputs.size() > 1)
      for (std::size_t i = 0; i < inputs.size(); ++i) x.rows(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).copy_from(inputs[i]);
    const std::vector<float> z = net->forward(x.to(device)).to_vector();
    for (std::size_t i = 0; i < names.size(); ++i) {
      const double stars = z[i] * ck.norm.std + ck.norm.mean;
      std::printf("%s,%.6f,%.4f\n", names[i].c_str(), static_cast<double>(z[i]), stars);
    }
    std::fflush(stdout);
  }
  if (failures > 0) {
    AE_WARN(failures << " of " << files.size() << " images could not be read (listed above)");
    set_exit_code(1);
  }
}

}  // namespace

void add_score_command(CLI::App& app) {
  auto args = std::make_shared<ScoreArgs>();
  CLI::App* cmd = app.add_subcommand("score", "Score photos: CSV path,score,stars on stdout");
  cmd->add_option("--model", args->model, "Model file (.safetensors from aesthete, or a PyTorch .pth state dict)")
      ->required();
  cmd->add_option("--user", args->user,
                  "User file (from personalisation) applied on top of --model, which must be the generic model it "
                  "was trained on");
  cmd->add_option("--size", args->size, "Input side (squash-resize); auto = the size the model was trained at (224 if unknown); "
                 "native = each photo at its own size")
      ->capture_default_str();
  cmd->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--batch", args->batch, "Photos per forward pass")->capture_default_str();
  cmd->add_option("paths", args->paths, "Images (JPEG, PNG) or folders of images")->required();
  cmd->callback([args] { run_score(*args); });
}

}  // namespace ae::app

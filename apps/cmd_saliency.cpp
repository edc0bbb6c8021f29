// aesthete saliency: where in a photo the predicted score comes from, as a heat-map overlay and
// the raw map as a 16-bit PNG (train/saliency.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "model/shared_model.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "session/session.h"
#include "train/saliency.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct SaliencyArgs {
  std::string model;
  std::string user;
  std::string input;
  std::string output;
  int smoothgrad = 0;
  double noise = 0.15;
  bool versus_generic = false;
  std::string size = "auto";
  std::string device = "auto";
  uint64_t seed = 0;
  bool cuda_graphs = true;
};

// OUT.png -> OUT.raw.png
std::string raw_path_of(const std::string& output) {
  std::string ext = fs::path(output).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  AE_CHECK(ext == ".png" && fs::path(output).stem() != "",
           "--output '" << output << "' must be a .png file name (the raw map goes beside it as NAME.raw.png)");
  return output.substr(0, output.size() - 4) + ".raw.png";
}

// Fails before any work when the output folder is missing or not writable.
void check_output_folder(const std::string& output) {
  fs::path dir = fs::path(output).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  AE_CHECK(fs::is_directory(dir, ec), "--output '" << output << "': folder '" << dir.string() << "' does not exist");
  AE_CHECK(::access(dir.c_str(), W_OK | X_OK) == 0,
           "--output '" << output << "': folder '" << dir.string() << "' is not writable");
  AE_CHECK(!fs::is_directory(output, ec), "--output '" << output << "' is a folder, not a file name");
}

void run_saliency(const SaliencyArgs& a) {
  // Everything that can be refused is refused before the model is loaded.
  AE_CHECK(!a.versus_generic || !a.user.empty(),
           "--versus-generic compares a person's map with the generic model's: it needs --user FILE");
  const std::string raw_path = raw_path_of(a.output);
  check_output_folder(a.output);
  const img::Image photo = img::read_image(a.input);

  const Device device = resolve_device(a.device);
  const model::Checkpoint ck = weights::load_model_file(a.model);
  AE_CHECK(ck.config.head != model::HeadType::imagenet,
           "'" << a.model << "' is an ImageNet classifier (fc 512->1000, no aesthetics head); train one with "
                  "`aesthete train --init " << a.model << " ...`");
  train::SaliencyOptions o;
  o.size = parse_input_size(a.size, ck.metadata);
  AE_CHECK(o.size > 0, "--size native: saliency needs one network side (auto or 32..4096), the map is square");
  o.smoothgrad = a.smoothgrad;
  o.noise = a.noise;
  o.seed = a.seed;
  o.versus_generic = a.versus_generic;
  o.cuda_graphs = a.cuda_graphs;
  model::SharedModel shared(ck, device, "--model '" + a.model + "'");
  std::string who = "the generic model";
  if (!a.user.empty()) {
    std::shared_ptr<model::UserState> state = shared.load_user(a.user);
    who = state->user_id.empty() ? "user file '" + a.user + "'" : "user " + state->user_id;
    shared.bind(state);
  } else {
    shared.bind_generic();
  }
  AE_INFO("saliency of '" << a.input << "' (" << photo.width << "x" << photo.height << ") for " << who << " at "
                          << o.size << "x" << o.size
                          << (o.smoothgrad > 0 ? ", SmoothGrad over " + std::to_string(o.smoothgrad) + " copies" : "")
                          << (o.versus_generic ? ", minus the generic model's map" : ""));
  const train::SaliencyResult r = train::compute_saliency(shared, photo, o);

  // Both files are encoded before either is written, then published atomically.
  const std::vector<uint8_t> overlay = img::encode_png(train::saliency_overlay(photo, r));
  const std::vector<uint8_t> raw = img::encode_png_gray16(train::saliency_raw_png(r));
  atomic_write(raw_path, raw.data(), raw.size());
  try {
    atomic_write(a.output, overlay.data(), overlay.size());
  } catch (...) {
    std::error_code ec;
    fs::remove(raw_path, ec);  // nothing half-written: no raw map without its overlay
    throw;
  }

  // The scores as `aesthete score` prints them (session::format_score: they read back as the same float).
  std::printf("score: %s\nstars: %.4f\n", session::format_score(static_cast<float>(r.score)).c_str(),
              session::stars(r.score, shared.norm()));
  if (r.is_signed)
    std::printf("generic_score: %s\ngeneric_stars: %.4f\n",
                session::format_score(static_cast<float>(r.generic_score)).c_str(), session::stars(r.generic_score, shared.norm()));
  std::printf("overlay: %s\nraw: %s\n", a.output.c_str(), raw_path.c_str());
  std::printf("raw_scale: %.9g\n", static_cast<double>(r.max_abs()));
  std::fflush(stdout);
}

}  // namespace

void add_saliency_command(CLI::App& app) {
  auto args = std::make_shared<SaliencyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "saliency", "Saliency map of a photo's predicted score: a heat-map overlay (OUT.png) and the raw map (OUT.raw.png)");
  cmd->add_option("--model", args->model, "Model file (.safetensors from aesthete, or a PyTorch .pth state dict)")
      ->required();
  cmd->add_option("--user", args->user,
                  "User file (from personalise --fit-all) applied on top of --model, the generic model it was trained on");
  cmd->add_option("--input", args->input, "The photo (JPEG or PNG)")->required();
  cmd->add_option("--output", args->output,
                  "Overlay PNG at the photo's size; the raw map is written beside it as NAME.raw.png (16-bit grayscale "
                  "at the network's resolution, value = (sample - aesthete:zero) / (65535 - aesthete:zero) * "
                  "aesthete:scale from its text chunks)")
      ->required();
  cmd->add_option("--smoothgrad", args->smoothgrad, "SmoothGrad: average the gradient over N noisy copies (0 = vanilla gradient)")
      ->capture_default_str();
  cmd->add_option("--noise", args->noise,
                  "SmoothGrad noise sigma as a fraction of the image's value range (noisy pixels clipped to [0,1])")
      ->capture_default_str();
  cmd->add_flag("--versus-generic", args->versus_generic,
                "With --user: the user's map minus the generic model's (signed; blue-white-red overlay)");
  cmd->add_option("--size", args->size, "Network input side (squash-resize, as score does); auto = the model's input_size (224 if unknown)")
      ->capture_default_str();
  cmd->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--seed", args->seed, "SmoothGrad noise seed")->capture_default_str();
  cmd->add_flag("--cuda-graphs,!--no-cuda-graphs", args->cuda_graphs,
                "On a CUDA device, replay one captured input-gradient pass for the SmoothGrad batches (default; "
                "same map)");
  add_max_pixels_option(*cmd);
  cmd->callback([args] { run_saliency(*args); });
}

}  // namespace ae::app

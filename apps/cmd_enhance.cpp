// aesthete enhance / apply-recipe: gradient ascent on a photo's predicted score (train/enhance.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "runtime/atomic_file.h"
#include "runtime/log.h"
#include "session/session.h"
#include "train/enhance.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct EnhanceArgs {
  std::string model, user, check_model, input, output = "output.jpg", input_dir;
  std::string mode = "global", size = "auto", device = "auto";
  train::EnhanceOptions o;
  int quality = 95;
};

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

// The folder of `path` must exist and be writable: checked before any work, so that a long
// optimisation never ends in "cannot write".
void require_writable_folder(const std::string& path, const char* flag) {
  const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  AE_CHECK(fs::is_directory(dir), flag << " '" << path << "': the folder '" << dir.string() << "' does not exist");
  AE_CHECK(::access(dir.c_str(), W_OK) == 0, flag << " '" << path << "': the folder '" << dir.string()
                                                  << "' is not writable");
}

void write_photo(const std::string& path, const img::Image& im, int quality) {
  const std::string ext = lower_ext(path);
  if (ext == ".png") {
    img::write_png(path, im);
  } else {
    AE_CHECK(ext == ".jpg" || ext == ".jpeg", "output '" << path << "': the name must end in .jpg, .jpeg or .png");
    img::write_jpeg(path, im, quality);
  }
}

std::string score_line(const char* who, double before, double after, const model::TargetNorm& n) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "%-22s z %+.4f -> %+.4f   stars %.3f -> %.3f", who, before, after, session::stars(before, n),
                session::stars(after, n));
  return buf;
}

struct Models {
  std::unique_ptr<model::SharedModel> shared;
  std::shared_ptr<model::UserState> user;
  std::unique_ptr<model::SharedModel> check;
  int size = 224;
};

// The output's name and folder, checked before any work.
void check_output(const std::string& out) {
  require_writable_folder(out, "--output");
  const std::string ext = lower_ext(out);
  AE_CHECK(ext == ".jpg" || ext == ".jpeg" || ext == ".png",
           "--output '" << out << "': the name must end in .jpg, .jpeg or .png");
}

void enhance_one(Models& m, const EnhanceArgs& a, const std::string& in, const std::string& out) {
  const img::Image photo = img::read_image(in);
  check_output(out);
  model::SharedModel& shared = *m.shared;
  auto score_all = [&](const img::Image& im, double& chosen, double& generic, double& check) {
    shared.bind_generic();
    generic = train::score_photo(shared, im, m.size);
    if (m.user) shared.bind(m.user);
    chosen = m.user ? train::score_photo(shared, im, m.size) : generic;
    if (m.check) check = train::score_photo(*m.check, im, m.size);
  };
  double c0 = 0, g0 = 0, k0 = 0, c1 = 0, g1 = 0, k1 = 0;
  score_all(photo, c0, g0, k0);
  train::EnhanceOptions o = a.o;
  o.size = m.size;
  const train::EnhanceResult r = train::enhance(shared, photo, o);
  score_all(r.image, c1, g1, k1);

  // The recipe first (small), then the photo: both atomic; nothing is written when either fails
  // before its rename.
  const std::string recipe_path = out + ".json";
  if (o.mode == train::EnhanceMode::global) {
    const std::vector<std::pair<std::string, double>> extra = {
        {"score_before", c0}, {"score_after", c1}, {"generic_score_before", g0}, {"generic_score_after", g1},
        {"accepted_steps", r.accepted}};
    const std::string json = r.recipe.to_json(extra);
    atomic_write(recipe_path, json.data(), json.size());
  }
  write_photo(out, r.image, a.quality);

  const model::TargetNorm& n = shared.norm();
  std::printf("%s -> %s  (%s, %dx%d, %d of %d steps accepted)\n", in.c_str(), out.c_str(),
              train::enhance_mode_name(o.mode), photo.width, photo.height, r.accepted, r.accepted + r.rejected);
  std::printf("  %s\n", score_line(m.user ? "for the user:" : "generic model:", c0, c1, n).c_str());
  if (m.user) std::printf("  %s\n", score_line("generic model:", g0, g1, n).c_str());
  if (m.check) std::printf("  %s\n", score_line("check model:", k0, k1, m.check->norm()).c_str());
  if (o.mode == train::EnhanceMode::global) {
    const train::EditRecipe& e = r.recipe;
    std::printf("  recipe %s: exposure %+.3f stops, contrast %+.3f, saturation %+.3f, temperature %+.3f, tint %+.3f\n",
                recipe_path.c_str(), e.exposure, e.contrast, e.saturation, e.temperature, e.tint);
  } else {
    std::printf("  largest pixel change %.4f (%.1f/255), budget %.4f\n", r.max_change, r.max_change * 255,
                o.epsilon < 0 ? 8.0 / 255 : o.epsilon);
  }
  std::fflush(stdout);
}

void run_enhance(EnhanceArgs& a) {
  AE_CHECK(!a.input.empty() != !a.input_dir.empty(), "give exactly one of --input (--inputimage) and --input-dir");
  AE_CHECK(a.quality >= 1 && a.quality <= 100, "--quality must be in 1..100, got " << a.quality);
  a.o.mode = train::parse_enhance_mode(a.mode);
  if (!a.input.empty()) check_output(a.output);  // before the model is loaded
  const Device device = resolve_device(a.device);
  const model::Checkpoint ck = weights::load_model_file(a.model);
  Models m;
  m.shared = std::make_unique<model::SharedModel>(ck, device, "--model '" + a.model + "'");
  m.size = parse_input_size(a.size, ck.metadata);
  AE_CHECK(m.size > 0, "--size native is not supported by enhance: the working image is resized to the model's input");
  if (!a.user.empty()) m.user = m.shared->load_user(a.user);
  if (!a.check_model.empty()) {
    const model::Checkpoint other = weights::load_model_file(a.check_model);
    m.check = std::make_unique<model::SharedModel>(other, device, "--check-model '" + a.check_model + "'");
  }
  if (!a.input.empty()) {
    enhance_one(m, a, a.input, a.output);
    return;
  }
  AE_CHECK(fs::is_directory(a.input_dir), "--input-dir '" << a.input_dir << "' is not a folder");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(a.input_dir)) {
    const std::string ext = lower_ext(e.path());
    if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png") &&
        e.path().filename().string().rfind("enhanced_", 0) != 0)
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  AE_CHECK(!files.empty(), "--input-dir '" << a.input_dir << "' holds no .jpg/.jpeg/.png photos");
  int failures = 0;
  for (const fs::path& f : files) {
    try {
      enhance_one(m, a, f.string(), (f.parent_path() / ("enhanced_" + f.filename().string())).string());
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      ++failures;
    }
  }
  if (failures > 0) {
    AE_WARN(failures << " of " << files.size() << " photos could not be enhanced (listed above)");
    set_exit_code(1);
  }
}

struct RecipeArgs {
  std::string recipe, input, output;
  int quality = 95;
};

void run_apply_recipe(const RecipeArgs& a) {
  const std::vector<uint8_t> bytes = img::read_file(a.recipe, train::kMaxRecipeBytes);
  const train::EditRecipe r =
      train::EditRecipe::from_json(std::string(bytes.begin(), bytes.end()), a.recipe);
  const img::Image photo = img::read_image(a.input);
  require_writable_folder(a.output, "--output");
  write_photo(a.output, train::apply_recipe(photo, r), a.quality);
  std::printf("%s -> %s  (recipe %s)\n", a.input.c_str(), a.output.c_str(), a.recipe.c_str());
}

}  // namespace

void add_enhance_command(CLI::App& app) {
  auto a = std::make_shared<EnhanceArgs>();
  CLI::App* cmd = app.add_subcommand("enhance", "Edit a photo toward a higher predicted score (gradient ascent)");
  cmd->add_option("--model,--network", a->model, "The generic model (from aesthete train, or a .pth state dict)")
      ->required();
  cmd->add_option("--user", a->user, "A person's user file: enhance for that person's taste");
  cmd->add_option("--input,--inputimage", a->input, "The photo (JPEG or PNG; alpha is composited onto white)");
  cmd->add_option("--output,--outputimage", a->output, "The enhanced photo (.jpg or .png); global mode also writes "
                                                        "OUT.json, the edit recipe")
      ->capture_default_str();
  cmd->add_option("--input-dir,--inputdirectory", a->input_dir,
                  "Enhance every photo of a folder, writing enhanced_<name> beside each");
  cmd->add_option("--mode", a->mode, "global (photo edits: exposure, contrast, saturation, white balance, tone "
                                     "curve) or pixels (projected ascent on pixels)")
      ->capture_default_str();
  cmd->add_option("--epsilon", a->o.epsilon,
                  "global: scale of the edit bounds (default 0.4; 1 = +-1 stop of exposure); pixels: largest change of "
                  "a pixel channel in [0,1] units (default 8/255)");
  cmd->add_option("--steps", a->o.steps, "Gradient steps")->capture_default_str();
  cmd->add_option("--max-side", a->o.max_side, "Working resolution (long side)")->capture_default_str();
  cmd->add_option("--eot", a->o.eot, "pixels: average the gradient over N random crops and flips")->capture_default_str();
  cmd->add_option("--check-model", a->check_model, "Also report the gain under this model (one the edit was not "
                                                   "optimised on)");
  cmd->add_option("--size", a->size, "Network input side; auto = the model's")->capture_default_str();
  cmd->add_option("--quality", a->quality, "JPEG quality of the output")->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--seed", a->o.seed)->capture_default_str();
  cmd->add_flag("--cuda-graphs,!--no-cuda-graphs", a->o.cuda_graphs,
                "On a CUDA device, replay one captured input-gradient pass per step (default; same result)");
  add_max_pixels_option(*cmd);
  cmd->callback([a] { run_enhance(*a); });

  auto r = std::make_shared<RecipeArgs>();
  CLI::App* ap = app.add_subcommand("apply-recipe", "Apply an edit recipe (OUT.json of enhance) to a photo");
  ap->add_option("--recipe", r->recipe, "The recipe JSON")->required();
  ap->add_option("--input", r->input, "The photo")->required();
  ap->add_option("--output", r->output, "The edited photo (.jpg or .png)")->required();
  ap->add_option("--quality", r->quality, "JPEG quality")->capture_default_str();
  add_max_pixels_option(*ap);
  ap->callback([r] { run_apply_recipe(*r); });
}

}  // namespace ae::app

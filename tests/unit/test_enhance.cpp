// Enhancement (train/enhance.h, `aesthete enhance`, `aesthete apply-recipe`): on a model trained to
// prefer bright images, both modes raise the score and brighten the photo, accepted steps never
// lower the score, sizes are kept, recipes round-trip and re-apply exactly, memory stays bounded
// on a large photo, and bad input is refused with nothing written.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "model/shared_model.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/enhance.h"
#include "train/synthetic.h"
#include "weights_tools/model_file.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

std::string root() { return test::build_dir() + "/enhance_test"; }

// A linear-head model trained on generated photos whose score is their brightness (32 px).
const std::string& bright_model() {
  static const std::string path = [] {
    fs::remove_all(root());
    data::SyntheticConfig c;
    c.count = 200;
    c.width = 40;
    c.height = 32;
    c.seed = 5;
    const std::string csv = data::make_synthetic_dataset(root() + "/data", c);
    const auto r = test::run_command(test::aesthete_binary() + " train --train-csv " + csv + " --images " + root() +
                                     "/data --out " + root() + "/model --size 32 --resize-to 36 --epochs 4 --batch 16 "
                                     "--head linear --device cpu --seed 2");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return root() + "/model/model.safetensors";
  }();
  return path;
}

// A mid-grey photo with some structure, of an odd size.
img::Image photo(int w, int h, uint64_t seed) {
  img::Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  const Tensor noise = test::random_tensor({h, w, 3}, seed, 0.0f, 1.0f);
  const float* n = noise.f32();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const std::size_t i = (static_cast<std::size_t>(y) * w + x) * 3 + c;
        const double v = 0.35 + 0.15 * (x / static_cast<double>(w)) + 0.1 * (c == 0) + 0.1 * n[i];
        im.rgb[i] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255));
      }
  return im;
}

double mean_luma(const img::Image& im) {
  double s = 0;
  for (std::size_t i = 0; i < im.rgb.size(); i += 3) s += 0.299 * im.rgb[i] + 0.587 * im.rgb[i + 1] + 0.114 * im.rgb[i + 2];
  return s / (im.rgb.size() / 3) / 255.0;
}

std::unique_ptr<model::SharedModel> load(const std::string& path) {
  return std::make_unique<model::SharedModel>(weights::load_model_file(path), Device::cpu(), path);
}

}  // namespace

TEST_CASE("both modes raise the score and brighten the photo for a model that likes bright photos") {
  auto shared = load(bright_model());
  const img::Image in = photo(97, 61, 1);  // odd sizes
  for (train::EnhanceMode mode : {train::EnhanceMode::global, train::EnhanceMode::pixels}) {
    const std::string name = train::enhance_mode_name(mode);
    INFO("mode " << name);
    train::EnhanceOptions o;
    o.mode = mode;
    o.size = 32;
    o.steps = 8;
    o.max_side = 64;  // the working image is smaller than the photo: the change is carried over
    o.eot = mode == train::EnhanceMode::pixels ? 3 : 1;
    const train::EnhanceResult r = train::enhance(*shared, in, o);
    REQUIRE(r.image.width == in.width);
    REQUIRE(r.image.height == in.height);
    REQUIRE(r.scores.size() == static_cast<std::size_t>(r.accepted) + 1);
    for (std::size_t i = 1; i < r.scores.size(); ++i) CHECK(r.scores[i] > r.scores[i - 1]);  // never falls
    CHECK(r.accepted >= 1);
    const double before = train::score_photo(*shared, in, 32), after = train::score_photo(*shared, r.image, 32);
    MESSAGE(name << ": score " << before << " -> " << after << ", luma " << mean_luma(in)
                                           << " -> " << mean_luma(r.image));
    CHECK(after > before);
    // Pixel ascent also finds non-photographic directions (the reason for --eot and --check-model),
    // so its brightening is smaller than the global edit's.
    CHECK(mean_luma(r.image) > mean_luma(in) + (mode == train::EnhanceMode::global ? 0.02 : 0.002));
    if (mode == train::EnhanceMode::pixels) {
      CHECK(r.max_change <= 8.0 / 255 + 1e-6);
      int biggest = 0;
      for (std::size_t i = 0; i < in.rgb.size(); ++i) biggest = std::max(biggest, std::abs(in.rgb[i] - r.image.rgb[i]));
      CHECK(biggest <= 9);  // 8/255 plus rounding of the upsampled change
    } else {
      CHECK(r.recipe.exposure > 0);  // brighter, by the exposure the recipe says
      // The recipe re-applied to the photo gives the same photo, bit for bit.
      const train::EditRecipe back = train::EditRecipe::from_json(r.recipe.to_json({{"score_after", after}}), "recipe");
      CHECK(back.theta() == r.recipe.theta());
      CHECK(train::apply_recipe(in, back).rgb == r.image.rgb);
    }
  }
}

TEST_CASE("edit recipes: the zero recipe is the identity; bad recipes are refused with the field named") {
  const img::Image in = photo(33, 17, 2);
  train::EditRecipe zero;
  zero.tone.assign(train::kToneKnots, 0.0);
  CHECK(train::apply_recipe(in, zero).rgb == in.rgb);
  const std::string ok = zero.to_json();
  test::require_error([] { train::EditRecipe::from_json("{", "r.json"); }, {"'r.json' is not valid JSON"});
  test::require_error([] { train::EditRecipe::from_json("{\"format\": \"x\"}", "r.json"); },
                      {"not an aesthete edit recipe"});
  std::string big = ok;
  big.replace(big.find("\"exposure_stops\": 0.0"), 21, "\"exposure_stops\": 7.0");
  test::require_error([&] { train::EditRecipe::from_json(big, "r.json"); }, {"exposure_stops = 7", "outside +-0.4"});
  std::string text = ok;
  text.replace(text.find("\"contrast\": 0.0"), 15, "\"contrast\": \"a\"");
  test::require_error([&] { train::EditRecipe::from_json(text, "r.json"); }, {"contrast must be a finite number"});
  // Hostile recipes (tests/regressions/recipe): a non-string format once escaped as a JSON library
  // exception, and 1e300 was converted to float (undefined behaviour) before the bounds check.
  test::require_error([] { train::EditRecipe::from_json("{\"format\": 5, \"version\": 1}", "r.json"); },
                      {"'r.json' is not an aesthete edit recipe"});
  std::string huge = ok;
  huge.replace(huge.find("\"exposure_stops\": 0.0"), 21, "\"exposure_stops\": 1e300");
  test::require_error([&] { train::EditRecipe::from_json(huge, "r.json"); },
                      {"'r.json': exposure_stops must be a finite number of magnitude at most 1e30"});
}

TEST_CASE("enhance and apply-recipe from the command line: files, scores, the original's flags, errors") {
  test::TempDir dir;
  img::write_png(dir.file("in.png"), photo(80, 53, 3));
  const std::string bin = test::aesthete_binary();
  // The original's flag names work (JPEG output, its default format).
  auto r = test::run_command(bin + " enhance --network " + bright_model() + " --inputimage " + dir.file("in.png") +
                             " --outputimage " + dir.file("out.jpg") + " --steps 4 --device cpu");
  REQUIRE(r.exit_code == 0);
  r = test::run_command(bin + " enhance --model " + bright_model() + " --input " + dir.file("in.png") + " --output " +
                        dir.file("out.png") + " --steps 4 --device cpu");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  AE_CHECK_CONTAINS(r.out, "generic model:");
  AE_CHECK_CONTAINS(r.out, "recipe " + dir.file("out.png") + ".json");
  REQUIRE(fs::exists(dir.file("out.jpg.json")));
  const img::Image out = img::read_image(dir.file("out.png"));
  CHECK((out.width == 80 && out.height == 53));
  // apply-recipe reproduces the edit exactly (PNG: lossless).
  r = test::run_command(bin + " apply-recipe --recipe " + dir.file("out.png.json") + " --input " + dir.file("in.png") +
                        " --output " + dir.file("again.png"));
  REQUIRE(r.exit_code == 0);
  CHECK(img::read_image(dir.file("again.png")).rgb == out.rgb);

  // Errors: nothing written.
  r = test::run_command(bin + " enhance --model " + bright_model() + " --input " + dir.file("missing.png") + " --output " +
                        dir.file("x.jpg") + " --device cpu");
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "missing.png");
  r = test::run_command(bin + " enhance --model " + bright_model() + " --input " + dir.file("in.png") +
                        " --output /nonexistent-folder/x.jpg --device cpu");
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "the folder '/nonexistent-folder' does not exist");
  r = test::run_command(bin + " enhance --model " + bright_model() + " --input " + dir.file("in.png") + " --output " +
                        dir.file("x.gif") + " --device cpu");
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "must end in .jpg, .jpeg or .png");
  // A user file of another generic model.
  {
    model::ModelConfig cfg;
    cfg.seed = 99;
    cfg.head = model::HeadType::linear;
    model::ResNet18 other(cfg);
    model::SharedModel shared(model::checkpoint_from_tensors(other.state_dict(), "other"), Device::cpu(), "other");
    shared.bind(shared.fresh_state(model::StateScope::user, "zoe"));
    shared.save_bound_user_file(dir.file("zoe.safetensors"), "zoe");
  }
  r = test::run_command(bin + " enhance --model " + bright_model() + " --user " + dir.file("zoe.safetensors") +
                        " --input " + dir.file("in.png") + " --output " + dir.file("x.jpg") + " --device cpu");
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "was trained on generic model");
  CHECK_FALSE(fs::exists(dir.file("x.jpg")));
  CHECK_FALSE(fs::exists(dir.file("x.jpg.json")));
  CHECK_FALSE(fs::exists(dir.file("x.gif")));
}

TEST_CASE("a 24-megapixel photo is enhanced in bounded memory (peak RSS measured)") {
  test::TempDir dir;
  img::Image big;
  big.width = 6000;
  big.height = 4000;
  big.rgb.assign(static_cast<std::size_t>(big.width) * big.height * 3, 0);
  for (int y = 0; y < big.height; ++y)
    for (int x = 0; x < big.width; ++x)
      for (int c = 0; c < 3; ++c)
        big.rgb[(static_cast<std::size_t>(y) * big.width + x) * 3 + c] = static_cast<uint8_t>((x / 7 + y / 5 + 40 * c) % 200 + 20);
  img::write_jpeg(dir.file("big.jpg"), big, 85);
  big = img::Image();
  for (const char* mode : {"pixels", "global"}) {
    const std::string cmd = test::aesthete_binary() + " enhance --model " + bright_model() + " --input " +
                            dir.file("big.jpg") + " --output " + dir.file(std::string("out_") + mode + ".jpg") +
                            " --mode " + mode + " --steps 2 --device cpu";
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > /dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    struct rusage usage {};
    REQUIRE(wait4(pid, &status, 0, &usage) == pid);
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    const double peak_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
    // The photo alone is 72 MB (input) + 72 MB (output) as 8-bit RGB; a full-size float copy of
    // the change would add 288 MB. Measured: see the message.
    MESSAGE(std::string(mode) << " on a 6000x4000 photo: peak RSS " << peak_mb << " MB");
    CHECK(peak_mb < 420);
  }
}

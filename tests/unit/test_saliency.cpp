// Saliency maps (train/saliency.h, `aesthete saliency`): a model whose score depends on one image
// region puts its saliency there; SmoothGrad's definitions (N = 1 and noise 0 is vanilla, seeded
// repeatability); versus-generic; the overlay at the photo's size; the raw 16-bit PNG read back as
// numbers; the CLI's outputs and its errors (exit 1, a message, nothing written).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>

#include "model/checkpoint.h"
#include "model/shared_model.h"
#include "model/user_file.h"
#include "runtime/philox.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/optimizer.h"
#include "train/preprocess.h"
#include "train/saliency.h"
#include "train/train_loop.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

const std::string& work_dir() {
  static const std::string dir = [] {
    const std::string d = test::build_dir() + "/saliency_test";
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

constexpr int kSide = 32;

// A 32x32 photo whose left half has mean brightness `left` and right half `right`, with seeded
// texture and a colour tint so that brightness is not the only thing in it.
img::Image two_halves(double left, double right, uint64_t seed, int width = kSide, int height = kSide) {
  img::Image im;
  im.width = width;
  im.height = height;
  im.rgb.resize(static_cast<std::size_t>(width) * height * 3);
  const double tint[3] = {0.08 * (philox::uniform(seed, 0) - 0.5), 0.08 * (philox::uniform(seed, 1) - 0.5),
                          0.08 * (philox::uniform(seed, 2) - 0.5)};
  uint64_t k = 16;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const double base = x < width / 2 ? left : right;
      const double texture = 0.16 * (philox::uniform(seed, k++) - 0.5);
      for (int c = 0; c < 3; ++c) {
        const double v = std::clamp(base + texture + tint[c], 0.0, 1.0);
        im.rgb[(static_cast<std::size_t>(y) * width + x) * 3 + c] = static_cast<uint8_t>(std::lround(v * 255));
      }
    }
  return im;
}

// The "left half" model: a linear-head ResNet-18 trained (32 px, CPU, a few epochs) on images whose
// target is the LEFT half's brightness only, the right half's being independent noise. Written as
// a model file (input_size 32) that the library tests and the CLI share.
const std::string& left_model_file() {
  static const std::string path = [] {
    const auto t0 = std::chrono::steady_clock::now();
    constexpr int kImages = 192, kBatch = 16, kEpochs = 5;
    std::vector<Tensor> inputs;
    std::vector<float> targets;
    for (int i = 0; i < kImages; ++i) {
      const double left = 0.15 + 0.7 * philox::uniform(1000, 2 * static_cast<uint64_t>(i));
      const double right = 0.15 + 0.7 * philox::uniform(1000, 2 * static_cast<uint64_t>(i) + 1);
      inputs.push_back(img::preprocess_eval(two_halves(left, right, 5000 + static_cast<uint64_t>(i)), kSide));
      targets.push_back(static_cast<float>(4.0 * (left - 0.5)));
    }
    model::ModelConfig cfg;
    cfg.head = model::HeadType::linear;
    cfg.seed = 3;
    model::ResNet18 net(cfg);
    train::OptimizerConfig oc;
    oc.lr = 2e-3f;
    train::Optimizer adam(net.trainable_parameters(), oc);
    train::TrainStep step(net, {&adam}, Device::cpu());
    net.set_training(true);
    net.set_grad_enabled(true);
    float loss = 0;
    for (int epoch = 0; epoch < kEpochs; ++epoch) {
      double sum = 0;
      for (int b0 = 0; b0 < kImages; b0 += kBatch) {
        // A fixed, epoch-dependent order (a rotation of the batches is enough here).
        Tensor x = Tensor::empty({kBatch, kSide, kSide, 3});
        std::vector<float> y(kBatch);
        for (int j = 0; j < kBatch; ++j) {
          const int i = (b0 + j + epoch * 7 * kBatch / 2) % kImages;
          x.rows(j, j + 1).copy_from(inputs[static_cast<std::size_t>(i)]);
          y[static_cast<std::size_t>(j)] = targets[static_cast<std::size_t>(i)];
        }
        const auto out = step.run(x, Tensor::from_vector({kBatch, 1}, y));
        REQUIRE(out.finite);
        sum += out.loss;
      }
      loss = static_cast<float>(sum / (kImages / kBatch));
    }
    net.set_training(false);
    const std::string p = work_dir() + "/left.safetensors";
    model::save_checkpoint(p, net, model::TargetNorm{}, {{"input_size", std::to_string(kSide)}});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("left-half model: " << kEpochs << " epochs of " << kImages << " images in " << seconds
                                << " s, last epoch's training MSE " << loss << " (target variance ~0.65)");
    return p;
  }();
  return path;
}

// A random linear-head model file (input_size 32), fast to make.
std::string random_model_file(uint64_t seed) {
  const std::string p = work_dir() + "/random" + std::to_string(seed) + ".safetensors";
  if (!fs::exists(p)) {
    model::ModelConfig cfg;
    cfg.head = model::HeadType::linear;
    cfg.seed = seed;
    model::ResNet18 net(cfg);
    model::save_checkpoint(p, net, model::TargetNorm{}, {{"input_size", "32"}});
  }
  return p;
}

// A user file on top of `generic_path`: the head and BatchNorms moved (or, with `identity`, the
// generic model itself as a user file).
std::string user_file(const std::string& generic_path, const std::string& name, bool identity) {
  const std::string p = work_dir() + "/" + name + ".safetensors";
  if (!fs::exists(p)) {
    const model::Checkpoint ck = model::read_checkpoint(generic_path);
    std::unique_ptr<model::ResNet18> generic = model::make_model(ck);
    const std::string digest = model::model_digest(*generic);
    std::unique_ptr<model::ResNet18> user = model::make_adapter_model(ck);
    if (!identity) {
      uint64_t seed = 300;
      for (model::ParamRef& r : user->parameters()) {
        if (r.param->group == model::ParamGroup::backbone) continue;
        const bool gamma = r.param->group == model::ParamGroup::bn_affine && r.name.ends_with(".weight");
        r.param->value.copy_from(gamma ? test::random_tensor(r.param->value.shape(), ++seed, 0.7f, 1.3f)
                                       : test::random_tensor(r.param->value.shape(), ++seed, -0.05f, 0.05f));
      }
    }
    model::save_user_file(p, *user, digest, name);
  }
  return p;
}

double left_fraction(const std::vector<float>& map, int side) {
  double left = 0, all = 0;
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x) {
      const double v = map[static_cast<std::size_t>(y) * side + x];
      all += v;
      if (x < side / 2) left += v;
    }
  return all > 0 ? left / all : 0.0;
}

std::string bin() { return test::aesthete_binary(); }

}  // namespace

TEST_CASE("a model that scores the left half's brightness puts its saliency on the left half") {
  const model::Checkpoint ck = model::read_checkpoint(left_model_file());
  model::SharedModel shared(ck, Device::cpu(), "left");
  train::SaliencyOptions o;
  o.size = kSide;
  double left_sum = 0, all_sum = 0, worst = 1;
  double score_lo = 0, score_hi = 0;
  for (int i = 0; i < 8; ++i) {
    const img::Image photo = two_halves(0.2 + 0.08 * i, 0.8 - 0.08 * i, 90000 + static_cast<uint64_t>(i));
    const train::SaliencyResult r = train::compute_saliency(shared, photo, o);
    REQUIRE(r.map.size() == static_cast<std::size_t>(kSide * kSide));
    for (float v : r.map) REQUIRE(v >= 0);
    const double f = left_fraction(r.map, kSide);
    worst = std::min(worst, f);
    double s = 0;
    for (float v : r.map) s += v;
    all_sum += s;
    left_sum += f * s;
    if (i == 0) score_lo = r.score;
    if (i == 7) score_hi = r.score;
  }
  const double fraction = left_sum / all_sum;
  MESSAGE("saliency mass in the left half: " << 100 * fraction << "% over 8 photos (worst photo " << 100 * worst
                                             << "%); score " << score_lo << " (left 0.20) -> " << score_hi
                                             << " (left 0.76)");
  CHECK(score_hi > score_lo + 0.5);  // it did learn the left half's brightness
  CHECK(fraction > 0.65);

  // SmoothGrad agrees, and concentrates as much or more.
  o.smoothgrad = 8;
  o.noise = 0.15;
  const train::SaliencyResult sg = train::compute_saliency(shared, two_halves(0.5, 0.5, 7), o);
  MESSAGE("SmoothGrad (8 copies, noise 0.15): " << 100 * left_fraction(sg.map, kSide) << "% on the left half");
  CHECK(left_fraction(sg.map, kSide) > 0.65);
  CHECK(sg.noise_sigma > 0);
}

TEST_CASE("SmoothGrad with one noiseless copy is the vanilla map; the noise is seeded") {
  const model::Checkpoint ck = model::read_checkpoint(random_model_file(11));
  model::SharedModel shared(ck, Device::cpu(), "random");
  const img::Image photo = two_halves(0.3, 0.7, 1, 41, 27);
  train::SaliencyOptions o;
  o.size = 40;
  const train::SaliencyResult vanilla = train::compute_saliency(shared, photo, o);
  CHECK(vanilla.max_abs() > 0);
  CHECK(vanilla.noise_sigma == 0);

  // The score is `aesthete score`'s: a forward pass on preprocess_eval.
  model::ResNet18& net = shared.net();
  net.set_training(false);
  net.set_grad_enabled(false);
  CHECK(vanilla.score == doctest::Approx(net.forward(img::preprocess_eval(photo, 40)).item()).epsilon(1e-6));
  net.set_grad_enabled(true);

  o.smoothgrad = 1;
  o.noise = 0;
  const train::SaliencyResult one = train::compute_saliency(shared, photo, o);
  CHECK(one.map == vanilla.map);  // bit for bit
  CHECK(one.score == vanilla.score);

  o.smoothgrad = 5;
  o.noise = 0.2;
  o.seed = 3;
  o.batch = 2;  // batching is memory vs speed only
  const train::SaliencyResult a = train::compute_saliency(shared, photo, o);
  o.batch = 8;
  const train::SaliencyResult b = train::compute_saliency(shared, photo, o);
  o.seed = 4;
  const train::SaliencyResult c = train::compute_saliency(shared, photo, o);
  CHECK(a.score == vanilla.score);  // the score is the clean photo's
  REQUIRE(a.map.size() == b.map.size());
  double max_diff = 0;
  for (std::size_t i = 0; i < a.map.size(); ++i) max_diff = std::max(max_diff, static_cast<double>(std::fabs(a.map[i] - b.map[i])));
  CHECK(max_diff <= 1e-6 * a.max_abs());  // same seed: the same map (up to batch-size rounding)
  o.batch = 2;
  o.seed = 3;
  CHECK(train::compute_saliency(shared, photo, o).map == a.map);  // and exactly so run to run
  CHECK(c.map != a.map);       // another seed: other noise
  CHECK(a.map != vanilla.map);  // noise changes the map
  // sigma = noise * (max - min) of the resized [0,1] image.
  const img::ImageF resized = img::resize_bilinear(photo, 40, 40);
  const auto [lo, hi] = std::minmax_element(resized.rgb.begin(), resized.rgb.end());
  CHECK(a.noise_sigma == doctest::Approx(0.2 * (*hi - *lo)));

  o.noise = -1;
  CHECK_THROWS_WITH_AS(train::compute_saliency(shared, photo, o), doctest::Contains("--noise"), Error);
}

TEST_CASE("versus generic: the generic state as the user gives an all-zero map; a user's differs; binding restored") {
  const std::string generic_path = random_model_file(12);
  const model::Checkpoint ck = model::read_checkpoint(generic_path);
  model::SharedModel shared(ck, Device::cpu(), "random");
  const img::Image photo = two_halves(0.4, 0.6, 2, 33, 35);
  train::SaliencyOptions o;
  o.size = 32;
  o.versus_generic = true;
  o.smoothgrad = 3;
  o.noise = 0.1;

  shared.bind_generic();
  const auto generic_state = shared.bound();
  const train::SaliencyResult same = train::compute_saliency(shared, photo, o);
  CHECK(same.is_signed);
  CHECK(same.max_abs() == 0.0f);
  CHECK(same.score == same.generic_score);
  CHECK(shared.bound() == generic_state);

  // The generic model itself as a user file: also exactly zero.
  const auto identity = shared.load_user(user_file(generic_path, "identity", true));
  shared.bind(identity);
  CHECK(train::compute_saliency(shared, photo, o).max_abs() == 0.0f);

  const auto user = shared.load_user(user_file(generic_path, "moved", false));
  shared.bind(user);
  const train::SaliencyResult diff = train::compute_saliency(shared, photo, o);
  CHECK(shared.bound() == user);  // the user's state is bound again afterwards
  CHECK(diff.max_abs() > 0);
  CHECK(diff.score != diff.generic_score);
  // It is exactly the user's map minus the generic map.
  o.versus_generic = false;
  const train::SaliencyResult mine = train::compute_saliency(shared, photo, o);
  shared.bind_generic();
  const train::SaliencyResult theirs = train::compute_saliency(shared, photo, o);
  bool any_negative = false, any_positive = false;
  for (std::size_t i = 0; i < diff.map.size(); ++i) {
    REQUIRE(diff.map[i] == mine.map[i] - theirs.map[i]);
    any_negative |= diff.map[i] < 0;
    any_positive |= diff.map[i] > 0;
  }
  CHECK(any_negative);
  CHECK(any_positive);
  CHECK(diff.score == mine.score);
  CHECK(diff.generic_score == theirs.score);
}

TEST_CASE("the overlay has the photo's own size (odd sizes too); upsampling keeps constants and edges") {
  const model::Checkpoint ck = model::read_checkpoint(random_model_file(11));
  model::SharedModel shared(ck, Device::cpu(), "random");
  train::SaliencyOptions o;
  o.size = 32;
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{37, 29}, {1, 1}, {101, 3}, {32, 32}}) {
    const img::Image photo = two_halves(0.3, 0.6, 9, w, h);
    train::SaliencyResult r = train::compute_saliency(shared, photo, o);
    const img::Image overlay = train::saliency_overlay(photo, r);
    CHECK(overlay.width == w);
    CHECK(overlay.height == h);
    CHECK(overlay.rgb.size() == static_cast<std::size_t>(w) * h * 3);
    r.is_signed = true;  // the diverging rendering too
    CHECK(train::saliency_overlay(photo, r).width == w);
  }
  const std::vector<float> constant(6, 2.5f);
  for (float v : train::upsample_map(constant, 2, 3, 7, 5)) CHECK(v == 2.5f);
  // A left-to-right ramp stays monotone and keeps its end values at the edges.
  const std::vector<float> ramp = {0, 1, 2, 3};
  const std::vector<float> up = train::upsample_map(ramp, 1, 4, 1, 9);
  CHECK(up.front() == 0.0f);
  CHECK(up.back() == 3.0f);
  CHECK(std::is_sorted(up.begin(), up.end()));
  // An all-zero map renders the dimmed photo without failing (no division by zero).
  train::SaliencyResult zero;
  zero.size = 4;
  zero.map.assign(16, 0.0f);
  const img::Image photo = two_halves(0.5, 0.5, 1, 5, 5);
  CHECK(train::saliency_overlay(photo, zero).width == 5);
}

TEST_CASE("the raw 16-bit PNG reads back to the map within half a step of its scale") {
  train::SaliencyResult r;
  r.size = 19;
  r.score = 0.25;
  for (int i = 0; i < 19 * 19; ++i) r.map.push_back(static_cast<float>(std::pow(std::sin(0.37 * i), 2) * 3e-3));
  r.map[5] = 0;
  for (bool is_signed : {false, true}) {
    INFO("signed " << is_signed);
    if (is_signed) {
      r.is_signed = true;
      r.generic_score = -0.5;
      for (std::size_t i = 0; i < r.map.size(); i += 3) r.map[i] = -r.map[i];
    }
    const std::string path = work_dir() + (is_signed ? "/signed.raw.png" : "/plain.raw.png");
    const std::vector<uint8_t> bytes = img::encode_png_gray16(train::saliency_raw_png(r));
    test::write_file(path, std::string(bytes.begin(), bytes.end()));
    const img::Gray16Image im = img::read_png_gray16(path);
    CHECK(im.width == 19);
    CHECK(im.height == 19);
    REQUIRE(img::find_text(im, "aesthete:kind") != nullptr);
    CHECK(*img::find_text(im, "aesthete:kind") == (is_signed ? "saliency-versus-generic" : "saliency"));
    CHECK(*img::find_text(im, "aesthete:zero") == (is_signed ? "32768" : "0"));
    const train::SaliencyRaw back = train::saliency_from_raw_png(im, path);
    CHECK(back.is_signed == is_signed);
    CHECK(back.scale == doctest::Approx(r.max_abs()).epsilon(1e-8));
    REQUIRE(back.values.size() == r.map.size());
    double worst = 0;
    for (std::size_t i = 0; i < r.map.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(back.values[i]) - r.map[i]));
    const double bound = r.max_abs() / (is_signed ? 65534.0 : 65535.0);  // half a step (plus float rounding)
    MESSAGE(std::string(is_signed ? "signed" : "plain") << " raw map: max |error| " << worst << " = " << worst / r.max_abs()
                                             << " of the scale");
    CHECK(worst <= bound * (1 + 1e-4));
    CHECK(back.values[5] == 0.0f);  // zero is exact
    // The largest |value| reaches an end of the range.
    const auto [lo, hi] = std::minmax_element(im.values.begin(), im.values.end());
    CHECK((*hi == 65535 || (is_signed && *lo == 1)));
  }
  // A photo is not a map: the reader says what it got.
  const std::string photo = work_dir() + "/photo.png";
  img::write_png(photo, two_halves(0.5, 0.5, 3, 8, 8));
  CHECK_THROWS_WITH_AS(img::read_png_gray16(photo), doctest::Contains("not a 16-bit grayscale PNG (it is RGB, 8 bits"), Error);
  // And a 16-bit PNG without the text is not a saliency map.
  img::Gray16Image bare;
  bare.width = bare.height = 2;
  bare.values = {0, 1, 2, 65535};
  const std::vector<uint8_t> bytes = img::encode_png_gray16(bare);
  const img::Gray16Image bare_back = img::decode_png_gray16(bytes.data(), bytes.size(), "bare");
  CHECK(bare_back.values == bare.values);
  CHECK_THROWS_WITH_AS(train::saliency_from_raw_png(bare_back, "bare"), doctest::Contains("not an aesthete saliency map"), Error);
}

// ---------------------------------------------------------------- the command line

TEST_CASE("aesthete saliency writes the overlay at the photo's size and the raw map; prints score and paths") {
  const std::string model = left_model_file();
  const std::string dir = work_dir() + "/cli_ok";
  fs::create_directories(dir);
  const std::string photo_path = dir + "/photo.png";
  const img::Image photo = two_halves(0.7, 0.3, 77, 45, 31);
  img::write_png(photo_path, photo);
  const auto r = test::run_command(bin() + " saliency --device cpu --model " + model + " --input " + photo_path +
                                   " --output " + dir + "/map.png --smoothgrad 4 --seed 2");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("score: ") != std::string::npos);
  CHECK(r.out.find("stars: ") != std::string::npos);
  CHECK(r.out.find("overlay: " + dir + "/map.png") != std::string::npos);
  CHECK(r.out.find("raw: " + dir + "/map.raw.png") != std::string::npos);
  const img::Image overlay = img::read_image(dir + "/map.png");
  CHECK(overlay.width == 45);
  CHECK(overlay.height == 31);
  const img::Gray16Image raw = img::read_png_gray16(dir + "/map.raw.png");
  CHECK(raw.width == 32);  // --size auto: the model's input_size
  CHECK(raw.height == 32);

  // The same numbers as the library, and the printed score is `aesthete score`'s.
  const model::Checkpoint ck = model::read_checkpoint(model);
  model::SharedModel shared(ck, Device::cpu(), "left");
  train::SaliencyOptions o;
  o.size = 32;
  o.smoothgrad = 4;
  o.seed = 2;
  const train::SaliencyResult lib = train::compute_saliency(shared, photo, o);
  const train::SaliencyRaw back = train::saliency_from_raw_png(raw, "map.raw.png");
  REQUIRE(back.values.size() == lib.map.size());
  for (std::size_t i = 0; i < lib.map.size(); ++i) REQUIRE(std::fabs(back.values[i] - lib.map[i]) <= lib.max_abs() / 65535.0);
  const auto score = test::run_command(bin() + " score --device cpu --model " + model + " " + photo_path);
  REQUIRE(score.exit_code == 0);
  const std::string row = score.out.substr(score.out.find('\n') + 1);  // path,score,stars
  const std::string z = row.substr(row.find(',') + 1, row.rfind(',') - row.find(',') - 1);
  CHECK(r.out.find("score: " + z + "\n") != std::string::npos);
  MESSAGE("left-half photo: " << 100 * left_fraction(back.values, 32) << "% of the CLI's SmoothGrad map on the left");

  // versus-generic with the generic model as the user file: the raw map is all "zero" (32768).
  const std::string identity = user_file(model, "left_identity", true);
  const auto v = test::run_command(bin() + " saliency --device cpu --model " + model + " --user " + identity +
                                   " --versus-generic --input " + photo_path + " --output " + dir + "/vs.png");
  INFO(v.err);
  REQUIRE(v.exit_code == 0);
  CHECK(v.out.find("generic_score: ") != std::string::npos);
  const img::Gray16Image vs = img::read_png_gray16(dir + "/vs.raw.png");
  CHECK(std::all_of(vs.values.begin(), vs.values.end(), [](uint16_t s) { return s == 32768; }));
  CHECK(img::read_image(dir + "/vs.png").width == 45);
}

TEST_CASE("aesthete saliency errors: exit 1, a clear message, nothing written") {
  const std::string model = random_model_file(21);
  const std::string other = random_model_file(22);
  const std::string user = user_file(model, "someone", false);
  const std::string dir = work_dir() + "/cli_errors";
  fs::create_directories(dir);
  const std::string photo = dir + "/photo.png";
  img::write_png(photo, two_halves(0.5, 0.4, 5, 20, 20));
  test::write_file(dir + "/broken.jpg", "\xFF\xD8\xFF not really a jpeg");
  const std::string base = bin() + " saliency --device cpu ";
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"--model " + model + " --input " + dir + "/missing.png --output " + dir + "/a.png", "missing.png"},
      {"--model " + model + " --input " + dir + "/broken.jpg --output " + dir + "/a.png", "broken.jpg"},
      {"--model " + model + " --input " + photo + " --output " + dir + "/no/such/folder/a.png",
       "folder '" + dir + "/no/such/folder' does not exist"},
      {"--model " + model + " --input " + photo + " --output " + photo + "/a.png", "does not exist"},
      {"--model " + model + " --input " + photo + " --output " + dir + "/a.jpg", "must be a .png file name"},
      {"--model " + model + " --input " + photo + " --output " + dir + "/a.png --versus-generic", "needs --user FILE"},
      {"--model " + other + " --user " + user + " --input " + photo + " --output " + dir + "/a.png",
       "error: user file '" + user + "' was trained on generic model"},
      {"--model " + model + " --input " + photo + " --output " + dir + "/a.png --size 7", "--size"},
      {"--model " + model + " --input " + photo + " --output " + dir + "/a.png --smoothgrad 2 --noise -0.5", "--noise"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const auto r = test::run_command(base + c.args);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find(c.message) != std::string::npos);
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
    std::sort(left.begin(), left.end());
    CHECK(left == std::vector<std::string>{"broken.jpg", "photo.png"});  // no output, no temporary file
  }
}

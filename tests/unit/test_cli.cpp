// The `aesthete` binary end to end: inspect, convert, score, and the errors users meet.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/checkpoint.h"
#include "tests/support/check.h"
#include "tests/support/run_command.h"
#include "train/preprocess.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

const std::string& work_dir() {
  static const std::string dir = [] {
    const std::string d = test::build_dir() + "/cli_test";
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// A linear-head model with seeded random weights (eval-mode BN statistics from init).
std::string linear_model_file() {
  const std::string path = work_dir() + "/linear.safetensors";
  if (!fs::exists(path)) {
    model::ModelConfig cfg;
    cfg.head = model::HeadType::linear;
    cfg.seed = 5;
    model::ResNet18 net(cfg);
    model::save_checkpoint(path, net, model::TargetNorm{}, {{"input_size", "32"}});
  }
  return path;
}

std::string photos(int count = 3) {
  const std::string dir = work_dir() + "/photos" + std::to_string(count);
  if (!fs::exists(dir + "/labels.csv")) {
    data::SyntheticConfig c;
    c.count = count;
    c.width = 37;
    c.height = 29;
    data::make_synthetic_dataset(dir, c);
  }
  return dir;
}

std::string bin() { return test::aesthete_binary(); }

}  // namespace

TEST_CASE("every subcommand has --help") {
  for (const char* sub : {"score", "inspect", "convert", "train", "make-dataset"}) {
    const auto r = test::run_command(bin() + " " + sub + " --help");
    INFO(sub);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("Usage:") != std::string::npos);
  }
  const auto r = test::run_command(bin() + " frobnicate");
  CHECK(r.exit_code != 0);
}

TEST_CASE("inspect lists tensors and names the layout") {
  const auto r = test::run_command(bin() + " inspect " + linear_model_file());
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("format: safetensors") != std::string::npos);
  CHECK(r.out.find("layer4.1.bn2.running_var") != std::string::npos);
  CHECK(r.out.find("fc.weight                                        f32   [1,512]") != std::string::npos);
  CHECK(r.out.find("layout: ResNet-18, head linear, adapters no") != std::string::npos);
  CHECK(r.out.find("metadata: input_size = 32") != std::string::npos);
}

TEST_CASE("score prints path,score,stars equal to the library's forward pass") {
  const std::string dir = photos();
  const auto r = test::run_command(bin() + " score --model " + linear_model_file() + " --device cpu " + dir);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::string header;
  std::getline(lines, header);
  CHECK(header == "path,score,stars");

  model::Checkpoint ck = model::read_checkpoint(linear_model_file());
  auto net = model::make_model(ck);
  net->set_training(false);
  net->set_grad_enabled(false);
  int rows = 0;
  std::string line;
  while (std::getline(lines, line)) {
    const auto c1 = line.find(','), c2 = line.rfind(',');
    const std::string path = line.substr(0, c1);
    const double z = std::stod(line.substr(c1 + 1, c2 - c1 - 1));
    const double stars = std::stod(line.substr(c2 + 1));
    const float expect = net->forward(img::preprocess_eval(img::read_image(path), 32)).item();  // input_size 32
    CHECK(z == doctest::Approx(expect).epsilon(1e-5));
    CHECK(stars == doctest::Approx(z * 1.1001719588 + 3.0183403576).epsilon(1e-4));
    ++rows;
  }
  CHECK(rows == 3);
}

TEST_CASE("convert writes a file that inspects and scores the same") {
  const std::string out = work_dir() + "/converted.safetensors";
  const auto c = test::run_command(bin() + " convert " + linear_model_file() + " " + out);
  REQUIRE(c.exit_code == 0);
  const std::string img = photos() + "/img_00000.png";
  const auto a = test::run_command(bin() + " score --size 32 --model " + linear_model_file() + " " + img);
  const auto b = test::run_command(bin() + " score --size 32 --model " + out + " " + img);
  CHECK(a.exit_code == 0);
  CHECK(a.out == b.out);
}

TEST_CASE("score keeps going past unreadable images, names them and exits 1") {
  const std::string bad = work_dir() + "/broken.jpg";
  std::ofstream(bad) << "\xFF\xD8\xFF\xE0 truncated";
  const std::string good = photos() + "/img_00001.png";
  const auto r = test::run_command(bin() + " score --model " + linear_model_file() + " " + bad + " " + good +
                                   " /nonexistent.png");
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("img_00001.png,") != std::string::npos);
  CHECK(r.err.find("broken.jpg") != std::string::npos);
  CHECK(r.err.find("/nonexistent.png") != std::string::npos);
  CHECK(r.err.find("2 of 3 images could not be read") != std::string::npos);
}

TEST_CASE("clear errors: bad model files, bad sizes, a device that is not there") {
  auto r = test::run_command(bin() + " score --model /nonexistent.safetensors x.png");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("/nonexistent.safetensors") != std::string::npos);
  const std::string junk = work_dir() + "/junk.safetensors";
  std::ofstream(junk) << "this is not a model";
  r = test::run_command(bin() + " inspect " + junk);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("error:") != std::string::npos);
  r = test::run_command(bin() + " score --size 7 --model " + linear_model_file() + " x.png");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--size must be native or a side in 32..4096, got '7'") != std::string::npos);
  r = test::run_command(bin() + " score --device tpu --model " + linear_model_file() + " x.png");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("bad device 'tpu'") != std::string::npos);
}

TEST_CASE("train refuses unusable settings before doing any work") {
  const std::string dir = photos(20);
  const std::string out = work_dir() + "/train_err";
  auto r = test::run_command(bin() + " train --train-csv " + dir + "/labels.csv --images /nonexistent --out " + out +
                             " --device cpu");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("images are missing from '/nonexistent'") != std::string::npos);
  r = test::run_command(bin() + " train --train-csv " + dir + "/labels.csv --images " + dir + " --out " + out +
                        " --resume --device cpu");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--resume: no training state") != std::string::npos);
  r = test::run_command(bin() + " train --train-csv " + dir + "/labels.csv --images " + dir + " --out " + out +
                        " --batch 1 --device cpu");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--batch must be at least 2") != std::string::npos);
}

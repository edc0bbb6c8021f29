// `aesthete train` end to end on a generated data set (the score is a known function of the
// image): it learns, writes its files, resumes exactly after a stop or Ctrl-C, survives corrupt
// images, and stops cleanly on a NaN loss. (Kills at random moments: slow/test_crash_resume.)
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/check.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

const std::string& data_dir() {
  static const std::string dir = [] {
    const std::string d = test::build_dir() + "/train_e2e/data";
    fs::remove_all(test::build_dir() + "/train_e2e");
    data::SyntheticConfig c;
    c.count = 160;
    c.width = 40;
    c.height = 34;
    c.seed = 3;
    data::make_synthetic_dataset(d, c);
    return d;
  }();
  return dir;
}

std::string train_cmd(const std::string& out, const std::string& extra = "") {
  return test::aesthete_binary() + " train --train-csv " + data_dir() + "/labels.csv --images " + data_dir() +
         " --out " + out + " --size 32 --resize-to 36 --batch 16 --head linear --device cpu --workers 2 " + extra;
}

struct Row {
  double train_loss, val_mse, spearman;
};

std::vector<Row> read_metrics(const std::string& out) {
  std::ifstream in(out + "/metrics.csv");
  std::string line;
  std::getline(in, line);
  std::vector<Row> rows;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string f[6];
    for (auto& x : f) std::getline(ls, x, ',');
    rows.push_back({std::stod(f[2]), std::stod(f[3]), std::stod(f[4])});
  }
  return rows;
}

// The loss columns, which must be identical between an interrupted+resumed run and a straight one.
std::string loss_columns(const std::string& out) {
  std::ifstream in(out + "/metrics.csv");
  std::ostringstream os;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string f[7];
    for (auto& x : f) std::getline(ls, x, ',');
    os << f[0] << "," << f[1] << "," << f[2] << "," << f[3] << "," << f[4] << "," << f[5] << "\n";
  }
  return os.str();
}

const std::string& reference_run() {
  static const std::string out = [] {
    const std::string o = test::build_dir() + "/train_e2e/straight";
    const auto r = test::run_command(train_cmd(o, "--epochs 4"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return o;
  }();
  return out;
}

}  // namespace

TEST_CASE("train learns the generated data set and writes its files") {
  const std::string out = reference_run();
  const auto rows = read_metrics(out);
  REQUIRE(rows.size() == 4);
  CHECK(rows.back().train_loss < 0.5 * rows.front().train_loss);
  CHECK(rows.back().spearman > 0.8);
  for (const char* f : {"model.safetensors", "last.safetensors", "metrics.csv", "report.html"})
    CHECK(fs::exists(fs::path(out) / f));
  const std::string html = test::read_file(out + "/report.html");
  CHECK(html.find("<svg") != std::string::npos);
  // Self-contained: nothing fetched from anywhere when the page is opened.
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("href=") == std::string::npos);
  // The best model scores held-out-like images: its file is a normal model.
  const auto r = test::run_command(test::aesthete_binary() + " score --model " + out + "/model.safetensors " +
                                   data_dir() + "/img_00000.png");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("img_00000.png,") != std::string::npos);
}

TEST_CASE("a stopped run resumes to exactly the same losses") {
  const std::string out = test::build_dir() + "/train_e2e/stopped";
  auto r = test::run_command(train_cmd(out, "--epochs 4 --stop-after-steps 13"));
  REQUIRE(r.exit_code == 0);
  // 144 training images in batches of 16: 9 steps in epoch 1, then 4 of epoch 2's 9. The progress
  // line says how far the stopped epoch got (it once said 9/9).
  INFO(r.err);
  CHECK(r.err.find("epoch 2/4 4/9  interrupted") != std::string::npos);
  CHECK(r.err.find("Continue with:") != std::string::npos);
  CHECK(r.err.find("--resume") != std::string::npos);
  r = test::run_command(train_cmd(out, "--epochs 4 --stop-after-steps 9 --resume"));
  REQUIRE(r.exit_code == 0);
  r = test::run_command(train_cmd(out, "--epochs 4 --resume"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(loss_columns(out) == loss_columns(reference_run()));
  // Changing a setting that shapes the run is refused on resume.
  r = test::run_command(train_cmd(out, "--epochs 4 --resume --seed 9"));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("seed: saved '0', now '9'") != std::string::npos);
}

TEST_CASE("corrupt images are skipped and counted; a too-high learning rate stops on NaN") {
  const std::string dir = test::build_dir() + "/train_e2e/corrupt";
  data::SyntheticConfig c;
  c.count = 40;
  c.width = 36;
  c.height = 36;
  data::make_synthetic_dataset(dir, c);
  std::ofstream(dir + "/img_00003.png", std::ios::trunc) << "\x89PNG\r\n\x1a\n garbage";
  const std::string base = test::aesthete_binary() + " train --train-csv " + dir + "/labels.csv --images " + dir +
                           " --size 32 --resize-to 32 --batch 8 --head linear --device cpu --epochs 1";
  auto r = test::run_command(base + " --out " + dir + "/run");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("img_00003.png") != std::string::npos);
  std::ifstream m(dir + "/run/metrics.csv");
  std::string header, row;
  std::getline(m, header);
  std::getline(m, row);
  CHECK(row.substr(row.rfind(',') + 1) == "1");  // skipped_images (it is in the training split)

  r = test::run_command(base + " --lr 1e30 --out " + dir + "/nan");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("the loss became") != std::string::npos);
  // It says what helps (a new run with a lower lr), not a --resume that would replay the same loss.
  CHECK(r.err.find("No epoch had finished, so no model was saved") != std::string::npos);
  CHECK(r.err.find("with a lower --lr") != std::string::npos);
  CHECK(r.err.find("--resume") == std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/nan/model.safetensors"));
}

TEST_CASE("Ctrl-C (SIGINT) finishes the step, saves the state, exits 0 and prints how to continue") {
  const std::string out = test::build_dir() + "/train_e2e/sigint";
  const std::string log = test::build_dir() + "/train_e2e/sigint.log";
  const int status =
      test::signal_when_file_appears(train_cmd(out, "--epochs 6") + " > " + log + " 2>&1", out + "/metrics.csv", SIGINT);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string printed = test::read_file(log);
  INFO(printed);
  CHECK(printed.find("Continue with:") != std::string::npos);
  const auto r = test::run_command(train_cmd(out, "--epochs 4 --resume"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(loss_columns(out) == loss_columns(reference_run()));
}

TEST_CASE("training reads FLICKR-AES label files as published") {
  // The generated labels rewritten in the FLICKR-AES means format (quoted header, index column).
  std::ifstream in(data_dir() + "/labels.csv");
  const std::string flickr = test::build_dir() + "/train_e2e/flickr_means.csv";
  std::ofstream outf(flickr);
  outf << "\" imagePair\" rating\n";
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    const auto comma = line.find(',');
    outf << line.substr(0, comma) << " " << line.substr(0, comma) << " " << line.substr(comma + 1) << "\n";
  }
  outf.close();
  const std::string out = test::build_dir() + "/train_e2e/flickr";
  const auto r = test::run_command(test::aesthete_binary() + " train --train-csv " + flickr + " --images " +
                                   data_dir() + " --out " + out +
                                   " --size 32 --resize-to 36 --batch 16 --head linear --device cpu --epochs 1");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("training on 144 images, validating on 16") != std::string::npos);
}

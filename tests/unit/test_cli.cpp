// The `aesthete` binary end to end: inspect, convert, score, and the errors users meet.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/stat.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/user_file.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
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

TEST_CASE("--max-pixels: photos above it are refused by score (exit 1, named), bad values by every command") {
  const std::string photo = photos() + "/img_00001.png";  // 37x29 = 1073 pixels
  auto r = test::run_command(bin() + " score --max-pixels 1073 --model " + linear_model_file() + " " + photo);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("img_00001.png,") != std::string::npos);
  r = test::run_command(bin() + " score --max-pixels 1072 --model " + linear_model_file() + " " + photo);
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "img_00001.png: image 37x29 has 1073 pixels, more than the limit of 1072");
  for (const char* command : {"score", "enhance", "apply-recipe", "saliency", "train", "personalise"}) {
    CAPTURE(command);
    r = test::run_command(bin() + " " + command + " --max-pixels 0");
    CHECK(r.exit_code != 0);
    AE_CHECK_CONTAINS(r.err, "--max-pixels");
    r = test::run_command(bin() + " " + command + " --help");
    AE_CHECK_CONTAINS(r.out, "--max-pixels");
  }
}

TEST_CASE("demo: refuses an --out folder it did not make, and a --photos folder without the photos") {
  const std::string root = work_dir() + "/demo_refusals";
  fs::remove_all(root);
  fs::create_directories(root + "/theirs");
  fs::create_directories(root + "/photos");
  test::write_file(root + "/theirs/keep.txt", "precious");
  auto r = test::run_command(bin() + " demo --device cpu --photos " + root + "/photos --out " + root + "/theirs");
  CHECK(r.exit_code != 0);
  AE_CHECK_CONTAINS(r.err, "is not empty and was not made by `aesthete demo`");
  CHECK(test::read_file(root + "/theirs/keep.txt") == "precious");
  r = test::run_command(bin() + " demo --device cpu --photos " + root + "/photos --out " + root + "/mine");
  CHECK(r.exit_code != 0);
  AE_CHECK_CONTAINS(r.err, "--photos " + root + "/photos has no astronaut.png");
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

TEST_CASE("train and make-dataset: an --out that cannot be a folder is one line naming --out, the path and why") {
  const std::string dir = photos(3);
  const std::string root = work_dir() + "/bad_out";
  fs::remove_all(root);
  fs::create_directories(root);
  const std::string file = root + "/a_file";
  test::write_file(file, "keep me\n");
  const std::string train =
      bin() + " train --device cpu --train-csv " + dir + "/labels.csv --images " + dir + " --out ";
  const std::string make = bin() + " make-dataset --count 2 --width 8 --height 8 --out ";
  // One error line with the flag, the path and the reason: not a bare errno text, no crash.
  const auto refused = [](const test::CommandResult& r, const std::string& path, const std::string& reason) {
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 1);
    AE_CHECK_CONTAINS(r.err, "error: --out '" + path + "': " + reason);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("filesystem error") == std::string::npos);
  };
  // Root writes into a read-only folder anyway: that case runs as nobody where setpriv can start the
  // binary so (every folder above it open to others), and is left out otherwise.
  std::string unprivileged;
  if (::geteuid() == 0) {
    const std::string setpriv = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
    if (test::run_command(setpriv + "sh -c '" + bin() + " --version && test -r " + file + "'").exit_code == 0)
      unprivileged = setpriv;
    else
      MESSAGE("running as root without a way to run the binary as nobody: the read-only folder case is not checked");
  }
  const bool check_read_only = ::geteuid() != 0 || !unprivileged.empty();
  for (const std::string& command : {train, make}) {
    CAPTURE(command);
    // A folder the kernel will not create (also as root): /proc takes no new entries.
    refused(test::run_command(command + "/proc/aesthete-out"), "/proc/aesthete-out", "cannot create it in '/proc': ");
    // A file where the folder should be, or on the way to it: refused, the file untouched.
    refused(test::run_command(command + file), file, "it exists and is a file, not a folder");
    refused(test::run_command(command + file + "/sub/dir"), file + "/sub/dir",
            "'" + file + "' is a file, not a folder");
    CHECK(test::read_file(file) == "keep me\n");
    // A folder without write permission: refused, and nothing made inside it.
    const std::string ro = root + "/read_only";
    fs::create_directories(ro);
    ::chmod(ro.c_str(), 0555);
    if (check_read_only) {
      refused(test::run_command(unprivileged + command + ro), ro, "cannot create files in it: Permission denied");
      refused(test::run_command(unprivileged + command + ro + "/new"), ro + "/new",
              "cannot create it in '" + ro + "': Permission denied");
      refused(test::run_command(unprivileged + command + ro + "/new/sub"), ro + "/new/sub",
              "cannot create its parent folder '" + ro + "/new': Permission denied");
      CHECK(fs::is_empty(ro));
    }
    ::chmod(ro.c_str(), 0755);
  }
  // Missing parent folders are created (the data set is small enough to make here).
  const auto made = test::run_command(make + root + "/new/parents/set");
  CHECK(made.exit_code == 0);
  CHECK(fs::exists(root + "/new/parents/set/labels.csv"));
  // Nothing else was left behind: no probe files, no half-made folders.
  std::vector<std::string> left;
  for (const auto& e : fs::recursive_directory_iterator(root)) left.push_back(fs::relative(e.path(), root).string());
  std::sort(left.begin(), left.end());
  const std::vector<std::string> expected = {"a_file", "new", "new/parents", "new/parents/set",
                                             "new/parents/set/labels.csv", "read_only"};
  std::vector<std::string> dirs_and_csv;
  for (const std::string& l : left)
    if (l.find(".png") == std::string::npos) dirs_and_csv.push_back(l);
  CHECK(dirs_and_csv == expected);
}

// ---------------------------------------------------------------- score --user (user files)

namespace {

// A generic seed-head model (input_size 32) and a personalised model on top of it: adapters, BN
// affine parameters and head set to seeded random values, running statistics moved by two
// train-mode forwards. Written as the generic file, the user file and the equivalent full model.
struct UserFiles {
  std::string generic, user, full, digest;
};

const UserFiles& user_files() {
  static const UserFiles files = [] {
    UserFiles f;
    f.generic = work_dir() + "/generic.safetensors";
    f.user = work_dir() + "/user.safetensors";
    f.full = work_dir() + "/user_full.safetensors";
    model::ModelConfig cfg;
    cfg.seed = 7;
    model::ResNet18 generic(cfg);
    f.digest = model::model_digest(generic);
    model::save_checkpoint(f.generic, generic, model::TargetNorm{}, {{"input_size", "32"}});
    std::unique_ptr<model::ResNet18> user = model::make_adapter_model(model::read_checkpoint(f.generic));
    uint64_t seed = 100;
    for (model::ParamRef& p : user->parameters()) {
      if (p.param->group == model::ParamGroup::backbone) continue;
      const bool gamma = p.param->group == model::ParamGroup::bn_affine && p.name.ends_with(".weight");
      p.param->value.copy_from(gamma ? test::random_tensor(p.param->value.shape(), ++seed, 0.7f, 1.3f)
                                     : test::random_tensor(p.param->value.shape(), ++seed, -0.05f, 0.05f));
    }
    user->set_training(true);
    user->set_grad_enabled(false);
    for (int i = 0; i < 2; ++i) user->forward(test::random_tensor({2, 32, 32, 3}, 900 + i));
    user->set_training(false);
    model::save_user_file(f.user, *user, f.digest, "alice");
    model::save_checkpoint(f.full, *user, model::TargetNorm{}, {{"input_size", "32"}});
    return f;
  }();
  return files;
}

}  // namespace

TEST_CASE("score --user gives the scores of the equivalent full model; inspect names the user file") {
  const UserFiles& f = user_files();
  const std::string dir = photos();
  const auto with_user = test::run_command(bin() + " score --device cpu --model " + f.generic + " --user " + f.user + " " + dir);
  const auto full = test::run_command(bin() + " score --device cpu --model " + f.full + " " + dir);
  const auto generic = test::run_command(bin() + " score --device cpu --model " + f.generic + " " + dir);
  INFO(with_user.err);
  REQUIRE(with_user.exit_code == 0);
  REQUIRE(full.exit_code == 0);
  CHECK(with_user.out == full.out);     // the same weights: the same numbers, digit for digit
  CHECK(with_user.out != generic.out);  // and the user file did change them
  CHECK(std::count(with_user.out.begin(), with_user.out.end(), '\n') == 4);  // header + 3 photos
  // Photos right after `--user FILE` are photos, not more user files.
  const auto two = test::run_command(bin() + " score --device cpu --model " + f.generic + " --user " + f.user + " " +
                                     dir + "/img_00000.png " + dir + "/img_00001.png");
  INFO(two.err);
  CHECK(two.exit_code == 0);
  CHECK(std::count(two.out.begin(), two.out.end(), '\n') == 3);  // header + 2 photos

  const auto user_info = test::run_command(bin() + " inspect " + f.user);
  REQUIRE(user_info.exit_code == 0);
  CHECK(user_info.out.find("metadata: kind = user") != std::string::npos);
  CHECK(user_info.out.find("layout: user file") != std::string::npos);
  CHECK(user_info.out.find("user: alice") != std::string::npos);
  CHECK(user_info.out.find("trained on generic model: " + f.digest) != std::string::npos);
  const auto generic_info = test::run_command(bin() + " inspect " + f.generic);
  REQUIRE(generic_info.exit_code == 0);
  CHECK(generic_info.out.find("digest: " + f.digest) != std::string::npos);
}

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string f;
  while (std::getline(in, f, ',')) out.push_back(f);
  return out;
}

}  // namespace

TEST_CASE("score for several people: one column per person (and --generic), equal to scoring each alone") {
  const UserFiles& f = user_files();
  const std::string dir = photos();
  // A second person on the same generic model, in a folder with alice.
  const std::string users = work_dir() + "/users";
  fs::create_directories(users);
  fs::copy_file(f.user, users + "/alice.safetensors", fs::copy_options::overwrite_existing);
  {
    std::unique_ptr<model::ResNet18> bob = model::make_adapter_model(model::read_checkpoint(f.generic));
    uint64_t seed = 500;
    for (model::ParamRef& p : bob->parameters())
      if (p.param->group == model::ParamGroup::adapters || p.param->group == model::ParamGroup::head)
        p.param->value.copy_from(test::random_tensor(p.param->value.shape(), ++seed, -0.05f, 0.05f));
    model::save_user_file(users + "/bob.safetensors", *bob, f.digest, "bob");
  }
  const auto many = test::run_command(bin() + " score --device cpu --model " + f.generic + " --generic --user " +
                                      users + "/alice.safetensors --user " + users + "/bob.safetensors " + dir);
  INFO(many.err);
  REQUIRE(many.exit_code == 0);
  const auto rows = lines_of(many.out);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == "path,generic,generic_stars,alice,alice_stars,bob,bob_stars");
  const auto generic = lines_of(test::run_command(bin() + " score --device cpu --model " + f.generic + " " + dir).out);
  const auto alice = lines_of(test::run_command(bin() + " score --device cpu --model " + f.generic + " --user " +
                                                users + "/alice.safetensors " + dir).out);
  const auto bob = lines_of(test::run_command(bin() + " score --device cpu --model " + f.generic + " --user " + users +
                                              "/bob.safetensors " + dir).out);
  for (std::size_t i = 1; i < rows.size(); ++i) {
    const auto m = fields_of(rows[i]), g = fields_of(generic[i]), a = fields_of(alice[i]), b = fields_of(bob[i]);
    REQUIRE(m.size() == 7);
    CHECK(m[0] == g[0]);
    CHECK((m[1] == g[1] && m[2] == g[2]));
    CHECK((m[3] == a[1] && m[4] == a[2]));
    CHECK((m[5] == b[1] && m[6] == b[2]));
    CHECK(m[3] != m[5]);  // two people, two opinions
    for (int c : {2, 4, 6}) CHECK((std::stod(m[c]) >= 1.0 && std::stod(m[c]) <= 5.0));  // stars stay on the scale
  }
  // --users-dir takes every user file of a folder (sorted by name): the same columns.
  const auto dir_run = test::run_command(bin() + " score --device cpu --model " + f.generic + " --generic --users-dir " +
                                         users + " " + dir);
  REQUIRE(dir_run.exit_code == 0);
  CHECK(dir_run.out == many.out);
  // Many people (more than are kept resident: their states are streamed from disk one at a time):
  // each column is still that person's.
  const std::string many_dir = work_dir() + "/many_users";
  fs::create_directories(many_dir);
  for (int i = 0; i < 20; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/p%02d.safetensors", i);
    fs::copy_file(users + (i % 2 ? "/bob.safetensors" : "/alice.safetensors"), many_dir + name,
                  fs::copy_options::overwrite_existing);
  }
  const auto streamed = test::run_command(bin() + " score --device cpu --model " + f.generic + " --users-dir " +
                                          many_dir + " " + dir);
  INFO(streamed.err);
  REQUIRE(streamed.exit_code == 0);
  AE_CHECK_CONTAINS(streamed.err, "one user's state in memory at a time");
  const auto srows = lines_of(streamed.out);
  REQUIRE(srows.size() == 4);
  CHECK(fields_of(srows[0]).size() == 41);  // path + 20 x (score, stars)
  for (std::size_t i = 1; i < srows.size(); ++i) {
    const auto m = fields_of(srows[i]), a = fields_of(alice[i]), b = fields_of(bob[i]);
    for (int p = 0; p < 20; ++p) CHECK(m[static_cast<std::size_t>(1 + 2 * p)] == (p % 2 ? b[1] : a[1]));
  }
  // One bad file among many: refused before any photo is scored.
  test::write_file(users + "/broken.safetensors", "not a user file");
  const auto bad = test::run_command(bin() + " score --device cpu --model " + f.generic + " --users-dir " + users + " " + dir);
  CHECK(bad.exit_code == 1);
  CHECK(bad.out.empty());
  AE_CHECK_CONTAINS(bad.err, "broken.safetensors");
}

TEST_CASE("score --user on another generic model, or with the files swapped, is refused clearly") {
  const UserFiles& f = user_files();
  const std::string other = work_dir() + "/other_generic.safetensors";
  model::ModelConfig cfg;
  cfg.seed = 8;
  model::ResNet18 net(cfg);
  model::save_checkpoint(other, net);
  const std::string img = photos() + "/img_00000.png";
  auto r = test::run_command(bin() + " score --device cpu --model " + other + " --user " + f.user + " " + img);
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("error: user file '" + f.user + "' was trained on generic model " + f.digest + ", but --model '" +
                   other + "' has digest " + model::model_digest(net)) != std::string::npos);
  r = test::run_command(bin() + " score --device cpu --model " + f.user + " " + img);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("this is a 'user' file, not a model checkpoint") != std::string::npos);
  r = test::run_command(bin() + " score --device cpu --model " + f.generic + " --user " + f.full + " " + img);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("is a 'model' file, not a user file") != std::string::npos);
}

TEST_CASE("--conv-math and bench --precision are checked; the CPU is f32 only") {
  const std::string img = photos() + "/img_00000.png";
  auto r = test::run_command(bin() + " --conv-math fp8 score --model " + linear_model_file() + " " + img);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--conv-math") != std::string::npos);
  CHECK(r.err.find("fp8") != std::string::npos);
  // f32 is accepted everywhere and changes nothing on the CPU.
  const auto plain = test::run_command(bin() + " score --device cpu --model " + linear_model_file() + " " + img);
  const auto f32 =
      test::run_command(bin() + " --conv-math f32 score --device cpu --model " + linear_model_file() + " " + img);
  CHECK(f32.exit_code == 0);
  CHECK(f32.out == plain.out);
  r = test::run_command(bin() + " bench --what model --device cpu --precision tf32 --batch 2 --size 32 --steps 1");
  CHECK(r.exit_code == 1);
  // A CUDA build refuses it for the CPU device; a build without CUDA refuses it outright.
  CHECK((r.err.find("--precision tf32: the CPU backend computes in f32 only") != std::string::npos ||
         r.err.find("--precision tf32: this build has no CUDA backend") != std::string::npos));
  r = test::run_command(bin() + " bench --what model --device cpu --batch 2 --size 32 --steps 1");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("train-step  device=cpu batch=2 size=32 precision=f32 activations=f32") != std::string::npos);
  CHECK(r.out.find("images/s") != std::string::npos);
}

TEST_CASE("--activations bf16: every command's models store bf16 activations; other values are refused") {
  const std::string img = photos() + "/img_00000.png";
  auto r = test::run_command(bin() + " --activations fp16 score --device cpu --model " + linear_model_file() + " " + img);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--activations 'fp16': the activation storage must be f32 or bf16") != std::string::npos);
  r = test::run_command(bin() + " --activations bf16 bench --what model --device cpu --batch 2 --size 32 --steps 1");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("train-step  device=cpu batch=2 size=32 precision=f32 activations=bf16") != std::string::npos);
  CHECK(r.out.find("inference   device=cpu batch=2 size=32 precision=f32 activations=bf16") != std::string::npos);
  // Scores with bf16 storage: close to the f32 ones, not the same bits.
  const auto plain = test::run_command(bin() + " score --device cpu --model " + linear_model_file() + " " + img);
  const auto bf16 =
      test::run_command(bin() + " --activations bf16 score --device cpu --model " + linear_model_file() + " " + img);
  REQUIRE(plain.exit_code == 0);
  REQUIRE(bf16.exit_code == 0);
  CHECK(bf16.out != plain.out);
  const auto score_of = [](const std::string& out) {
    const std::size_t comma = out.find(',', out.find('\n') + 1);  // the header line, then path,score,stars
    return std::stod(out.substr(comma + 1));
  };
  CHECK(std::fabs(score_of(bf16.out) - score_of(plain.out)) < 0.05 * std::fabs(score_of(plain.out)) + 0.01);
}

TEST_CASE("train --init takes an ImageNet classifier's backbone and leaves the new head fresh") {
  const std::string init = work_dir() + "/imagenet.safetensors";
  {
    model::ModelConfig cfg;
    cfg.head = model::HeadType::imagenet;
    cfg.seed = 11;
    model::ResNet18 net(cfg);
    model::save_checkpoint(init, net);
  }
  const std::string dir = photos(20);
  const std::string out = work_dir() + "/train_init";
  const auto r = test::run_command(bin() + " train --train-csv " + dir + "/labels.csv --images " + dir + " --out " +
                                   out + " --init " + init +
                                   " --head linear --size 32 --resize-to 32 --batch 6 --epochs 1 --device cpu");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  // 122 backbone entries fit; fc (1000 outputs) does not fit the 1-output linear head.
  CHECK(r.err.find("init: 120 tensors loaded, 2 not used (e.g. fc.weight)") != std::string::npos);
  CHECK(r.err.find("no --init weights") == std::string::npos);
}

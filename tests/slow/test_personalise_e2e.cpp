// `aesthete personalise` end to end on generated people of opposite tastes (make-dataset --people):
// a generic model trained on everybody's mean rating cannot serve "bright" and "dark" at once, a
// personalised one can. Also: --select val independent of the test images, reruns of one (user,
// repeat), the files and the errors users meet. (Kills and resume: slow/test_crash_resume.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

std::string root() { return test::build_dir() + "/personalise_e2e"; }

const data::PeopleDataset& people() {
  static const data::PeopleDataset d = [] {
    fs::remove_all(root());
    data::PeopleConfig c;  // 600 images of 40x32; each person rates 150 of the last 200
    return data::make_people_dataset(root() + "/data", c);
  }();
  return d;
}

// The generic model: trained on the mean rating of raters whose tastes cancel out.
const std::string& generic_model() {
  static const std::string path = [] {
    const std::string out = root() + "/generic";
    const auto r = test::run_command(test::aesthete_binary() + " train --train-csv " + people().train_csv +
                                     " --images " + people().images_dir + " --out " + out +
                                     " --size 32 --resize-to 36 --epochs 4 --batch 32 --device cpu --seed 1");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return out + "/model.safetensors";
  }();
  return path;
}

std::string personalise_cmd(const std::string& out, const std::string& extra, int k = 100) {
  return test::aesthete_binary() + " personalise --model " + generic_model() + " --ratings " + people().workers_csv +
         " --images " + people().images_dir + " --out " + out + " --k " + std::to_string(k) +
         " --size 32 --device cpu --workers 2 --checkpoint-every 0 " + extra;
}

struct Result {
  std::string user;
  int repeat = 0;
  std::map<std::string, std::string> field;
  double num(const std::string& k) const { return std::stod(field.at(k)); }
};

std::vector<Result> read_results(const std::string& out) {
  std::ifstream in(out + "/results.csv");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::istringstream hs(line);
    std::string h;
    while (std::getline(hs, h, ',')) header.push_back(h);
  }
  std::vector<Result> rows;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    Result r;
    std::string v;
    for (std::size_t i = 0; std::getline(ls, v, ','); ++i) r.field[header.at(i)] = v;
    r.user = r.field.at("user");
    r.repeat = std::stoi(r.field.at("repeat"));
    rows.push_back(r);
  }
  return rows;
}

const std::string kUsers = "--users bright,dark";

// rho_personal - rho_generic of the person the generic model serves worst.
double gain_of_worst_served(const std::vector<Result>& rows) {
  const auto worst = std::min_element(rows.begin(), rows.end(), [](const Result& a, const Result& b) {
    return a.num("rho_generic") < b.num("rho_generic");
  });
  return worst == rows.end() ? 0.0 : worst->num("rho_personal") - worst->num("rho_generic");
}

// Adapters at k=100, one repeat per person, a short schedule (32 px, 12 epochs).
const std::string& adapters_run() {
  static const std::string out = [] {
    const std::string o = root() + "/adapters";
    const auto r = test::run_command(personalise_cmd(o, kUsers + " --mode adapters --repeats 1 --epochs 12 --fit-all"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return o;
  }();
  return out;
}

}  // namespace

TEST_CASE("adapters and full personalisation beat the generic model for people of opposite tastes; head is reported") {
  const auto adapters = read_results(adapters_run());
  REQUIRE(adapters.size() == 2);
  std::map<std::string, double> generic;
  for (const auto& r : adapters) {
    INFO(r.user << ": generic " << r.num("rho_generic") << ", personalised " << r.num("rho_personal"));
    CHECK(r.field.at("mode") == "adapters");
    CHECK(r.num("n_train") == 100);
    CHECK(r.num("n_test") == 50);
    CHECK(r.num("epochs") == 12);
    // Nobody is served worse than by the generic model, and everybody well.
    CHECK(r.num("rho_personal") > r.num("rho_generic"));
    CHECK(r.num("rho_personal") > 0.4);
    CHECK(r.num("delta_rho") == doctest::Approx(r.num("rho_personal") - r.num("rho_generic")).epsilon(1e-6));
    // The optimistic oracle can only be at least as good as the honest number.
    CHECK(r.num("oracle_rho") >= r.num("rho_personal"));
    generic[r.user] = r.num("rho_generic");
  }
  // Opposite tastes: what the generic model gets right for one it gets wrong for the other. Which
  // one it leans to (or neither) depends on the rounding of its short training: 0.19 / 0.09 with
  // one kernel set, 0.59 / -0.61 with another. So the large gain is asked of the person it serves
  // worse; the other may already be served fairly well (above: no worse than that).
  CHECK(generic["bright"] * generic["dark"] < 0.25);
  CHECK(gain_of_worst_served(adapters) > 0.2);

  const std::string full_out = root() + "/full";
  auto r = test::run_command(personalise_cmd(full_out, kUsers + " --mode full --repeats 1 --epochs 8 --lr 3e-4"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto full = read_results(full_out);
  for (const auto& row : full) {
    INFO(row.user << ": generic " << row.num("rho_generic") << ", full " << row.num("rho_personal"));
    CHECK(row.num("rho_personal") > row.num("rho_generic"));
  }
  CHECK(gain_of_worst_served(full) > 0.2);
  // head: measured and reported, whatever it gives (the frozen backbone's features may not carry
  // brightness well enough); the run must complete with sane numbers.
  const std::string head_out = root() + "/head";
  r = test::run_command(personalise_cmd(head_out, kUsers + " --mode head --repeats 1 --epochs 8"));
  REQUIRE(r.exit_code == 0);
  const auto head = read_results(head_out);
  REQUIRE(head.size() == 2);
  for (const auto& row : head) {
    MESSAGE("head mode, " << row.user << ": rho " << row.num("rho_generic") << " -> " << row.num("rho_personal"));
    CHECK(std::isfinite(row.num("rho_personal")));
    CHECK(row.num("rho_generic") == doctest::Approx(generic[row.user]).epsilon(1e-9));  // same draw, same generic
  }
}

TEST_CASE("the run's files: summary, draws, a self-contained report, deployable user files") {
  const std::string out = adapters_run();
  const std::string summary = test::read_file(out + "/summary.json");
  AE_CHECK_CONTAINS(summary, "\"trainable_parameters_per_user\": 1553539");
  AE_CHECK_CONTAINS(summary, "\"mode\": \"adapters\"");
  AE_CHECK_CONTAINS(summary, "\"seconds_per_user_measured\"");
  const std::string draws = test::read_file(out + "/draws.csv");
  CHECK(draws.rfind("user,repeat,role,image\n", 0) == 0);
  CHECK(std::count(draws.begin(), draws.end(), '\n') == 1 + 2 * 150);
  const std::string html = test::read_file(out + "/report.html");
  AE_CHECK_CONTAINS(html, "<svg");
  AE_CHECK_CONTAINS(html, "oracle");
  AE_CHECK_CONTAINS(html, "personalise --model");  // the exact command
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);  // references nothing, so nothing can be missing
  CHECK(html.find("href=") == std::string::npos);
  // The deployable files: small, and `score --user` uses them.
  for (const char* u : {"bright", "dark"}) {
    const std::string f = out + "/users/" + u + ".safetensors";
    REQUIRE(fs::exists(f));
    CHECK(static_cast<double>(fs::file_size(f)) <= 0.15 * static_cast<double>(fs::file_size(generic_model())));
  }
  const auto s = test::run_command(test::aesthete_binary() + " score --device cpu --model " + generic_model() +
                                   " --users-dir " + out + "/users " + people().images_dir + "/img_00599.png");
  INFO(s.err);
  REQUIRE(s.exit_code == 0);
  AE_CHECK_CONTAINS(s.out, "path,bright,bright_stars,dark,dark_stars");
}

TEST_CASE("one (user, repeat) reruns alone to the same row as in the full run") {
  // (Kills at random moments and the exact resume: slow/test_crash_resume.)
  const std::string alone = root() + "/alone";
  const auto a = test::run_command(personalise_cmd(alone, "--users dark --only-repeat 0 --mode adapters --repeats 1 --epochs 12"));
  INFO(a.err);
  REQUIRE(a.exit_code == 0);
  const std::string all = test::read_file(adapters_run() + "/results.csv");
  const std::string one = test::read_file(alone + "/results.csv");
  const std::string dark_row = one.substr(one.find('\n') + 1);
  REQUIRE(!dark_row.empty());
  AE_CHECK_CONTAINS(all, dark_row);
}

TEST_CASE("--select val never reads a test image: corrupt test images change no selection") {
  // The same run on a copy of the images whose test images (of this draw) are garbage.
  const std::string clean = root() + "/val_clean", dirty = root() + "/val_dirty";
  const std::string extra = "--users warm --mode adapters --repeats 1 --epochs 6 --select val";
  auto r = test::run_command(personalise_cmd(clean, extra));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string images = root() + "/images_corrupt";
  fs::remove_all(images);
  fs::copy(people().images_dir, images);
  std::istringstream draws(test::read_file(clean + "/draws.csv"));
  std::string line;
  int corrupted = 0;
  while (std::getline(draws, line))
    if (line.find(",test,") != std::string::npos) {
      test::write_file(images + "/" + line.substr(line.rfind(',') + 1), "not an image");
      ++corrupted;
    }
  REQUIRE(corrupted == 50);
  const std::string cmd = personalise_cmd(dirty, extra);
  r = test::run_command(cmd.substr(0, cmd.find(" --images ")) + " --images " + images + cmd.substr(cmd.find(" --out ")));
  REQUIRE(r.exit_code == 0);
  AE_CHECK_CONTAINS(r.err, "50 of 50 test images could not be read");
  const auto a = read_results(clean), b = read_results(dirty);
  REQUIRE(a.size() == 1);
  REQUIRE(b.size() == 1);
  CHECK(a[0].num("n_val") == 20);
  CHECK(a[0].field.at("epochs") == b[0].field.at("epochs"));  // the selected epoch
  CHECK(b[0].field.at("rho_personal") == "nan");               // nothing to test on, said plainly
  CHECK(b[0].num("unreadable_test_images") == 50);
}

TEST_CASE("errors: k larger than a user's ratings, an unknown user, a worker file read as published") {
  auto r = test::run_command(personalise_cmd(root() + "/err", "--users bright --mode head", 149));
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "--k 149 does not fit user 'bright', who has 150 ratings");
  r = test::run_command(personalise_cmd(root() + "/err", "--users nobody"));
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "--users: no user 'nobody'");
  CHECK_FALSE(fs::exists(root() + "/err/results.csv"));

  const std::string flickr = test::shared_dir() + "/flickr-aes/test_workers_dataset_normalized.csv";
  if (!fs::exists(flickr)) {
    MESSAGE("skipped the FLICKR-AES part: " << flickr << " is absent");
    return;
  }
  // The real file, as published: 37 workers with 112-180 ratings; k=150 does not fit the first
  // worker in file order with fewer than 152.
  r = test::run_command(test::aesthete_binary() + " personalise --model " + generic_model() + " --ratings " + flickr +
                        " --images " + root() + "/no-images --out " + root() + "/flickr --k 150 --device cpu");
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "--k 150 does not fit user 'AHPUVVEDSDA5F', who has 118 ratings");
  r = test::run_command(test::aesthete_binary() + " personalise --model " + generic_model() + " --ratings " + flickr +
                        " --images " + root() + "/no-images --out " + root() + "/flickr --k 100 --device cpu");
  CHECK(r.exit_code == 1);
  AE_CHECK_CONTAINS(r.err, "5139 of 5139 rated images are missing from --images");
}

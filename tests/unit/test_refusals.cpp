// Every way the `aesthete` command line refuses bad input, as one table: each row runs one command
// on one bad input and checks the exit status (the documented code: 1 for an error the program
// found, CLI11's code for a command line it cannot parse; never a signal) and that the message
// names what is wrong and where. The corrupt files are the kept fuzz regressions
// (tests/regressions/*) and tiny files written here. What tests/unit/test_cli.cpp already refuses
// (a missing model file, --size 7, --device tpu for score, --conv-math fp8, train without images
// or without state to resume, --max-pixels 0, the demo's folders, user files of another model) is
// not repeated here, nor what slow/test_personalise_e2e refuses (--k larger than a person's
// ratings, an unknown --users name), as each of those rows costs a model load.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

// CLI11's exit codes (CLI::ExitCodes) for command lines it refuses before the program runs.
constexpr int kConversionError = 104;  // a value of the wrong type ("--epochs many")
constexpr int kRequiredError = 106;    // a required option missing
constexpr int kExtrasError = 109;      // an unknown option or argument

struct Fixtures {
  std::string dir, model, photo, photos_dir, labels, people_images, people_train, people_workers;
};

std::string head_bytes(const std::string& path, std::size_t n) { return test::read_file(path).substr(0, n); }

const Fixtures& fixtures() {
  static const Fixtures f = [] {
    Fixtures x;
    x.dir = test::build_dir() + "/refusals";
    fs::remove_all(x.dir);
    fs::create_directories(x.dir);
    x.model = x.dir + "/model.safetensors";
    model::ModelConfig cfg;
    cfg.head = model::HeadType::linear;
    cfg.seed = 5;
    model::ResNet18 net(cfg);
    model::save_checkpoint(x.model, net, model::TargetNorm{}, {{"input_size", "32"}});
    data::SyntheticConfig sc;
    sc.count = 6;
    sc.width = 36;
    sc.height = 32;
    x.photos_dir = x.dir + "/photos";
    data::make_synthetic_dataset(x.photos_dir, sc);
    x.photo = x.photos_dir + "/img_00000.png";
    x.labels = x.photos_dir + "/labels.csv";
    data::PeopleConfig pc;
    pc.count = 30;
    pc.people_images = 12;
    pc.ratings_per_person = 10;
    const data::PeopleDataset people = data::make_people_dataset(x.dir + "/people", pc);
    x.people_images = people.images_dir;
    x.people_train = people.train_csv;
    x.people_workers = people.workers_csv;
    // Small bad files.
    test::write_file(x.dir + "/truncated.safetensors", head_bytes(x.model, 3000));
    test::write_file(x.dir + "/not_a_zip.pth", "PK\x03\x04 this is not a zip archive");
    test::write_file(x.dir + "/truncated.png", head_bytes(x.photo, 40));
    test::write_file(x.dir + "/truncated.jpg", "\xFF\xD8\xFF\xE0 truncated");
    test::write_file(x.dir + "/truncated_recipe.json", "{\"format\": \"aesthete-edit-recipe\", \"vers");
    test::write_file(x.dir + "/recipe.json",
                     "{\"format\": \"aesthete-edit-recipe\", \"version\": 1, \"epsilon\": 0.4, \"exposure_stops\": 0.1, "
                     "\"contrast\": 0, \"saturation\": 0, \"temperature\": 0, \"tint\": 0, \"tone_curve\": [0, 0, 0, 0]}");
    test::write_file(x.dir + "/empty.csv", "");
    test::write_file(x.dir + "/bad_header.csv", "file,rating\na.png,1\n");
    test::write_file(x.dir + "/inf_score.csv", "image,score\nimg_00000.png,inf\n");
    return x;
  }();
  return f;
}

std::string reg(const std::string& name) { return test::source_dir() + "/tests/regressions/" + name; }

struct Row {
  std::string what;               // what the row tries
  std::vector<std::string> args;  // after the binary
  int code;                       // expected exit status
  std::vector<std::string> says;  // fragments the message (stderr) must contain
};

std::vector<Row> table() {
  const Fixtures& f = fixtures();
  const std::string& m = f.model;
  const std::string d = f.dir;
  const std::string out = d + "/out";
  const std::vector<std::string> train = {"train", "--train-csv", f.labels, "--images", f.photos_dir, "--out",
                                          d + "/train_out", "--device", "cpu", "--size", "32"};
  // `base` with each option of `more` (pairs: option, value) set: replaced where `base` has it.
  const auto with = [](std::vector<std::string> base, const std::vector<std::string>& more) {
    for (std::size_t i = 0; i + 1 < more.size(); i += 2) {
      const auto it = std::find(base.begin(), base.end(), more[i]);
      if (it != base.end() && it + 1 != base.end()) {
        *(it + 1) = more[i + 1];
      } else {
        base.push_back(more[i]);
        base.push_back(more[i + 1]);
      }
    }
    return base;
  };
  const std::vector<std::string> personalise = {"personalise", "--model", m, "--ratings", f.people_workers,
                                                "--images", f.people_images, "--out", d + "/pers_out",
                                                "--device", "cpu", "--size", "32"};
  return {
      // ---- the command line itself (CLI11)
      {"an unknown subcommand", {"frobnicate"}, kRequiredError, {"unknown command 'frobnicate'", "personalise"}},
      {"no subcommand at all", {"--quiet"}, kRequiredError, {"A subcommand is required"}},
      {"an unknown option", {"score", "--model", m, "--frobnicate", f.photo}, kExtrasError, {"--frobnicate"}},
      {"score without --model", {"score", f.photo}, kRequiredError, {"--model is required"}},
      {"train without --train-csv", {"train", "--images", f.photos_dir, "--out", out}, kRequiredError,
       {"--train-csv is required"}},
      {"personalise without --k", {"personalise", "--model", m, "--ratings", f.people_workers, "--images",
                                   f.people_images, "--out", out}, kRequiredError, {"--k is required"}},
      {"apply-recipe without --recipe", {"apply-recipe", "--input", f.photo, "--output", out + ".png"},
       kRequiredError, {"--recipe is required"}},
      {"inspect without a file", {"inspect"}, kRequiredError, {"file is required"}},
      {"convert without its output", {"convert", m}, kRequiredError, {"out is required"}},
      {"make-dataset without --out", {"make-dataset"}, kRequiredError, {"--out is required"}},
      {"a number that is not one", with(train, {"--epochs", "many"}), kConversionError,
       {"Could not convert: --epochs = many"}},
      // ---- bad values
      {"negative epochs", with(train, {"--epochs", "-3"}), 1, {"--epochs must be at least 1, got -3"}},
      {"train on an unknown device", with(train, {"--device", "tpu"}), 1, {"bad device 'tpu'"}},
      {"train with an unknown head", with(train, {"--head", "giant"}), 1,
       {"unknown head type 'giant' (expected seed, linear or imagenet)"}},
      {"personalise: k of 0", with(personalise, {"--k", "0"}), 1, {"--k"}},
      {"personalise: an unknown mode", with(personalise, {"--k", "4", "--mode", "everything"}), 1,
       {"--mode must be adapters, head or full, got 'everything'"}},
      {"enhance: JPEG quality 0",
       {"enhance", "--model", m, "--input", f.photo, "--output", out + ".jpg", "--quality", "0", "--device", "cpu"},
       1, {"--quality must be in 1..100, got 0"}},
      {"enhance: an output that is neither JPEG nor PNG",
       {"enhance", "--model", m, "--input", f.photo, "--output", out + ".gif", "--device", "cpu"}, 1,
       {out + ".gif", ".png"}},
      {"saliency: a map that is not a PNG",
       {"saliency", "--model", m, "--input", f.photo, "--output", out + ".jpg", "--device", "cpu"}, 1,
       {out + ".jpg", ".png"}},
      {"saliency: --versus-generic without --user",
       {"saliency", "--model", m, "--input", f.photo, "--output", out + ".png", "--versus-generic", "--device",
        "cpu"}, 1, {"--versus-generic compares a person's map with the generic model's: it needs --user FILE"}},
      {"bench: an unknown --what", {"bench", "--what", "everything", "--device", "cpu"}, 1,
       {"--what must be all, model", "got 'everything'"}},
      {"bench: batch 1", {"bench", "--what", "model", "--batch", "1", "--device", "cpu"}, 1, {"--batch"}},
      {"make-dataset: more ratings per person than people images",
       {"make-dataset", "--people", "--out", d + "/md", "--ratings-per-person", "300", "--people-images", "200"}, 1,
       {"each person rates 300 distinct images (--ratings-per-person) but only 200 are reserved"}},
      {"make-dataset: images of 4 pixels", {"make-dataset", "--out", d + "/md2", "--width", "2", "--height", "2"}, 1,
       {"images of at least 8x8, got 200 of 2x2"}},
      // ---- missing files
      {"inspect a missing file", {"inspect", d + "/missing.safetensors"}, 1, {d + "/missing.safetensors"}},
      {"apply-recipe with a missing recipe",
       {"apply-recipe", "--recipe", d + "/missing.json", "--input", f.photo, "--output", out + ".png"}, 1,
       {d + "/missing.json"}},
      {"saliency of a missing photo",
       {"saliency", "--model", m, "--input", d + "/missing.png", "--output", out + ".png", "--device", "cpu"}, 1,
       {d + "/missing.png"}},
      {"train with a missing label file", with(train, {"--train-csv", d + "/missing.csv"}), 1, {d + "/missing.csv"}},
      // ---- models: .safetensors and .pth
      {"a truncated .safetensors", {"inspect", d + "/truncated.safetensors"}, 1,
       {d + "/truncated.safetensors': header length", "runs past the end of the file (3000 bytes)"}},
      {"score with a truncated model", {"score", "--model", d + "/truncated.safetensors", f.photo}, 1,
       {d + "/truncated.safetensors"}},
      {"a safetensors header of 2^64 bytes", {"inspect", reg("safetensors/header_length_2e19.safetensors")}, 1,
       {"header_length_2e19.safetensors': header length 18446744073709551615 exceeds the limit"}},
      {"a safetensors shape whose product overflows",
       {"inspect", reg("safetensors/shape_product_overflows.safetensors")}, 1,
       {"shape_product_overflows.safetensors': tensor 't': shape [4294967296,4294967296,16] has more bytes than any "
        "file can hold"}},
      {"safetensors JSON nested 100000 deep", {"inspect", reg("safetensors/nested_json_100000_deep.safetensors")}, 1,
       {"nested_json_100000_deep.safetensors': header nests JSON deeper than 16 levels"}},
      {"a .pth that is not a zip", {"inspect", d + "/not_a_zip.pth"}, 1,
       {d + "/not_a_zip.pth: zip: no end-of-central-directory record"}},
      {"convert a .pth with a 2^63 stride", {"convert", reg("pth/stride_2e63_size_1_double.pth"), out + ".safetensors"},
       1, {"stride_2e63_size_1_double.pth"}},
      {"score with a .pth of 5000 identical keys", {"score", "--model", reg("pth/same_key_5000_times.pth"), f.photo},
       1, {"same_key_5000_times.pth"}},
      {"train --init with a truncated model", with(train, {"--init", d + "/truncated.safetensors"}), 1,
       {d + "/truncated.safetensors"}},
      {"personalise with a truncated generic model",
       {"personalise", "--model", d + "/truncated.safetensors", "--ratings", f.people_workers, "--images",
        f.people_images, "--out", d + "/pers_out", "--k", "4", "--device", "cpu"}, 1, {d + "/truncated.safetensors"}},
      // ---- user files
      {"a user file without tensors", {"score", "--model", m, "--user", reg("user_file/no_tensors.safetensors"), f.photo},
       1, {"no_tensors.safetensors"}},
      {"a user file with an unknown head",
       {"score", "--model", m, "--user", reg("user_file/unknown_head.safetensors"), f.photo}, 1,
       {"unknown_head.safetensors': user file metadata: unknown head type", "(cut)"}},
      {"enhance for a truncated user file",
       {"enhance", "--model", m, "--user", d + "/truncated.safetensors", "--input", f.photo, "--output",
        out + ".png", "--device", "cpu"}, 1, {d + "/truncated.safetensors"}},
      // ---- photos
      {"score three bad photos (one model load): a 200000x200000 PNG header, a PNG chunk of 2 GB, a truncated "
       "JPEG declaring 65500x65500",
       {"score", "--model", m, reg("png/bomb_200000x200000_rgb.png"), reg("png/chunk_length_2gb.png"),
        reg("jpeg/bomb_65500x65500_truncated_photo.jpg")},
       1,
       {"bomb_200000x200000_rgb.png: image 200000x200000 has 40000000000 pixels, more than the limit",
        "chunk_length_2gb.png", "bomb_65500x65500_truncated_photo.jpg: cannot decode JPEG",
        "3 of 3 images could not be read"}},
      {"enhance a truncated PNG",
       {"enhance", "--model", m, "--input", d + "/truncated.png", "--output", out + ".png", "--device", "cpu"}, 1,
       {d + "/truncated.png"}},
      {"saliency of a truncated JPEG",
       {"saliency", "--model", m, "--input", d + "/truncated.jpg", "--output", out + ".png", "--device", "cpu"}, 1,
       {d + "/truncated.jpg"}},
      {"apply-recipe to a PNG bomb",
       {"apply-recipe", "--recipe", d + "/recipe.json", "--input", reg("png/bomb_200000x200000_rgb.png"),
        "--output", out + ".png"}, 1, {"bomb_200000x200000_rgb.png"}},
      // ---- label files (plain CSV and the FLICKR-AES formats)
      {"train on an empty label file", with(train, {"--train-csv", d + "/empty.csv"}), 1,
       {d + "/empty.csv", "empty"}},
      {"train on an unknown label header", with(train, {"--train-csv", d + "/bad_header.csv"}), 1,
       {d + "/bad_header.csv:1", "header"}},
      {"train on a score of inf", with(train, {"--train-csv", d + "/inf_score.csv"}), 1,
       {d + "/inf_score.csv:2", "not finite"}},
      {"train on a line of 70000 bytes", with(train, {"--train-csv", reg("labels/line_of_70000_bytes.csv")}), 1,
       {"line_of_70000_bytes.csv:2: line of 70002 bytes is longer than the limit of 65536 bytes"}},
      {"train on FLICKR means with unbalanced quotes",
       with(train, {"--train-csv", reg("labels/flickr_means_quotes_unbalanced.csv")}), 1,
       {"flickr_means_quotes_unbalanced.csv:2: expected 3 fields for FLICKR-AES means"}},
      {"personalise on FLICKR workers with NaN and short rows",
       with(personalise, {"--k", "4", "--ratings", reg("labels/flickr_workers_nan_and_short.csv")}), 1,
       {"flickr_workers_nan_and_short.csv"}},
      {"personalise: the ratings are refused before the model is read",
       {"personalise", "--model", d + "/truncated.safetensors", "--ratings",
        reg("labels/flickr_workers_nan_and_short.csv"), "--images", f.people_images, "--out", d + "/pers_out2", "--k",
        "4", "--device", "cpu"},
       1, {"flickr_workers_nan_and_short.csv"}},
      {"train on a label file of NUL and CR", with(train, {"--train-csv", reg("labels/nul_and_cr_only.csv")}), 1,
       {"nul_and_cr_only.csv:1: unknown CSV header"}},
      // ---- edit recipes
      {"a truncated recipe",
       {"apply-recipe", "--recipe", d + "/truncated_recipe.json", "--input", f.photo, "--output", out + ".png"}, 1,
       {"'" + d + "/truncated_recipe.json' is not valid JSON"}},
      {"a recipe nested deeply",
       {"apply-recipe", "--recipe", reg("recipe/deep_nesting.json"), "--input", f.photo, "--output", out + ".png"}, 1,
       {"deep_nesting.json"}},
      {"a recipe whose format is a number",
       {"apply-recipe", "--recipe", reg("recipe/format_is_a_number.json"), "--input", f.photo, "--output",
        out + ".png"}, 1, {"format_is_a_number.json", "format"}},
      {"a recipe whose version is a string",
       {"apply-recipe", "--recipe", reg("recipe/version_is_a_string.json"), "--input", f.photo, "--output",
        out + ".png"}, 1, {"version_is_a_string.json': recipe version is not 1"}},
      // ---- outputs that cannot be written (/proc takes no new files, even from root)
      {"convert into /proc", {"convert", m, "/proc/aesthete_test.safetensors"}, 1,
       {"cannot write '/proc/aesthete_test.safetensors'", "was not changed"}},
      {"apply-recipe with exposure 1e300",
       {"apply-recipe", "--recipe", reg("recipe/exposure_1e300.json"), "--input", f.photo, "--output", out + ".png"},
       1, {"exposure_1e300.json", "exposure_stops must be a finite number"}},
      {"apply-recipe into /proc",
       {"apply-recipe", "--recipe", d + "/recipe.json", "--input", f.photo, "--output",
        "/proc/aesthete_test.png"}, 1, {"/proc/aesthete_test.png"}},
      {"enhance into a missing folder",
       {"enhance", "--model", m, "--input", f.photo, "--output", d + "/no/such/folder/x.png", "--device", "cpu"}, 1,
       {"the folder '" + d + "/no/such/folder' does not exist"}},
      {"saliency into /proc",
       {"saliency", "--model", m, "--input", f.photo, "--output", "/proc/aesthete_test.png", "--device", "cpu"}, 1,
       {"cannot write '/proc/aesthete_test", "was not changed"}},
      {"train into /proc", with(train, {"--out", "/proc/aesthete_test"}), 1,
       {"--out '/proc/aesthete_test': cannot create it in '/proc': "}},
      {"make-dataset into /proc", {"make-dataset", "--out", "/proc/aesthete_test", "--count", "4"}, 1,
       {"--out '/proc/aesthete_test': cannot create it in '/proc': "}},
  };
}

}  // namespace

TEST_CASE("every refusal: an exit status (the documented code, never a signal) and a message saying what and where") {
  int rows = 0;
  const bool timing = std::getenv("AE_REFUSALS_TIMING") != nullptr;
  for (const Row& row : table()) {
    std::vector<std::string> argv = {test::aesthete_binary()};
    argv.insert(argv.end(), row.args.begin(), row.args.end());
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
    const auto t0 = std::chrono::steady_clock::now();
    const test::CommandResult r = test::run_argv(argv);
    if (timing)
      std::fprintf(stderr, "%.2f s: %s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), row.what.c_str());
    std::string problems;
    if (r.term_signal != 0) problems += "\n  ended by signal " + std::to_string(r.term_signal);
    if (r.exit_code != row.code)
      problems += "\n  exit status " + std::to_string(r.exit_code) + ", expected " + std::to_string(row.code);
    for (const std::string& s : row.says)
      if (r.err.find(s) == std::string::npos) problems += "\n  the message does not say: " + s;
    if (row.code == 1 && r.err.find("error: ") == std::string::npos) problems += "\n  no 'error: ' line";
    if (!problems.empty()) FAIL_CHECK(row.what << "\n  command: " << line << "\n  stderr: " << r.err << problems);
    ++rows;
  }
  CHECK(rows >= 60);
  MESSAGE(rows << " refusals checked");
}

TEST_CASE("personalise --resume refuses a damaged state file, naming it and the damage") {
  const Fixtures& f = fixtures();
  const std::string out = f.dir + "/stopped";
  const std::vector<std::string> run = {test::aesthete_binary(), "personalise", "--model", f.model, "--ratings",
                                        f.people_workers, "--images", f.people_images, "--out", out, "--k", "4",
                                        "--users", "bright", "--repeats", "1", "--epochs", "2", "--batch", "2",
                                        "--size", "32", "--device", "cpu", "--checkpoint-every", "0"};
  auto stop = run;
  stop.insert(stop.end(), {"--stop-after-steps", "3"});  // stopped in epoch 2: one epoch saved, a user running
  const auto stopped = test::run_argv(stop);
  INFO(stopped.err);
  REQUIRE(stopped.exit_code == 0);
  const std::string state = out + "/state.safetensors";
  REQUIRE(fs::exists(state));
  const std::string good = test::read_file(state);
  st::SafetensorsFile saved = st::read_safetensors(state);
  REQUIRE(saved.metadata.count("finished") == 1);
  REQUIRE(saved.metadata.count("current_row") == 1);  // stopped mid-user: the running user's record is there
  auto resume = run;
  resume.push_back("--resume");

  struct Damage {
    std::string what;
    std::function<void()> apply;
    std::vector<std::string> says;
  };
  const auto with_metadata = [&](const std::string& key, const std::string& value) {
    return [&, key, value] {
      std::map<std::string, std::string> meta = saved.metadata;
      meta[key] = value;
      st::write_safetensors(state, saved.tensors, meta);
    };
  };
  const std::vector<Damage> damages = {
      {"the file cut in half", [&] { test::write_file(state, good.substr(0, good.size() / 2)); }, {state}},
      {"the finished runs' record cut short", with_metadata("finished", "[{\"user\": \"bri"),
       {"--resume: '" + state + "' is damaged: its 'finished' record does not read"}},
      {"the finished runs' record of the wrong type", with_metadata("finished", "{\"user\": 3}"),
       {"--resume: '" + state + "' is damaged: its 'finished' record is not a list"}},
      {"the running user's record missing a field", with_metadata("current_row", "{\"user\": \"bright\"}"),
       {"--resume: '" + state + "' is damaged: its 'current_row' record does not read"}},
  };
  for (const Damage& d : damages) {
    CAPTURE(d.what);
    d.apply();
    const auto r = test::run_argv(resume);
    INFO("stderr: " << r.err);
    CHECK(r.term_signal == 0);
    CHECK(r.exit_code == 1);
    AE_CHECK_CONTAINS(r.err, "error: ");
    for (const std::string& s : d.says) AE_CHECK_CONTAINS(r.err, s);
  }
  // The undamaged state resumes (the damage, not the set-up, made the runs above fail).
  test::write_file(state, good);
  const auto r = test::run_argv(resume);
  INFO(r.err);
  CHECK(r.exit_code == 0);
  AE_CHECK_CONTAINS(r.err, "resuming: 0 runs finished, continuing user bright");
}

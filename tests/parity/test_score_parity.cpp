// `aesthete score` against PyTorch on real photos. weights_tools/score_reference.py (Debian's torch,
// /usr/bin/python3) writes a seed-head ResNet-18 with random weights and non-trivial BatchNorm
// statistics as a real .pth, and scores real photos (scripts/fetch_test_photos.sh: JPEG and PNG of
// several sizes, plus a 224x224 crop) with the documented eval preprocessing (PIL -> ToTensor ->
// bilinear F.interpolate without antialiasing -> ImageNet Normalize -> eval-mode model), at 224 and
// at native size. The CLI must agree per photo within 1e-4 relative error. The digest of the .pth
// must equal the one Python computes with hashlib (model/user_file.h defines it).
// Without /usr/bin/python3 + torch, or without the photos, the binary reports skipped, never passed.
#include <doctest/doctest.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/user_file.h"
#include "tests/support/check.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "weights_tools/model_file.h"

using namespace ae;
using ae::test::read_file_if_present;
namespace fs = std::filesystem;

namespace {

const char* kPython = "/usr/bin/python3";
constexpr double kMaxRelativeError = 1e-4;
// The CLI prints z-scores with 6 decimals; below this size the printed digits alone would exceed
// the relative tolerance, so such a reference would make the comparison meaningless.
constexpr double kMinReferenceMagnitude = 0.05;

std::string quoted(const std::string& s) { return "'" + s + "'"; }

struct Reference {
  std::string dir;
  std::string digest;
  // (path, "224" or "native") -> PyTorch's score; paths in the order the script wrote them.
  std::map<std::pair<std::string, std::string>, double> scores;
  std::vector<std::string> paths;
};

// Fetches the photos and generates the references once per build tree; regenerated when the
// scripts or the torch version change. Returns nullptr after marking the binary skipped.
const Reference* reference() {
  static Reference ref;
  static bool tried = false, ok = false;
  if (tried) return ok ? &ref : nullptr;
  tried = true;
  if (!fs::exists(kPython)) {
    test::skip_binary(std::string(kPython) + " not found: PyTorch score parity cannot run");
    return nullptr;
  }
  auto version = test::run_command(std::string(kPython) +
                                         " -c 'import torch, torchvision, PIL; print(torch.__version__, torchvision.__version__)'");
  if (version.exit_code != 0) {
    test::skip_binary("torch/torchvision/PIL not importable by " + std::string(kPython) + ": " + version.err);
    return nullptr;
  }
  while (!version.out.empty() && std::isspace(static_cast<unsigned char>(version.out.back()))) version.out.pop_back();
  const std::string photos = test::build_dir() + "/test-photos";
  const auto fetch = test::run_command("bash " + quoted(test::source_dir() + "/scripts/fetch_test_photos.sh") + " " +
                                       quoted(photos));
  if (fetch.exit_code != 0) {
    test::skip_binary("sample photos could not be fetched with scripts/fetch_test_photos.sh: " + fetch.err);
    return nullptr;
  }
  const std::string tools = test::source_dir() + "/weights_tools";
  const std::string out = test::build_dir() + "/score_parity_ref";
  const std::string scripts =
      read_file_if_present(tools + "/score_reference.py") + read_file_if_present(tools + "/make_reference.py");
  const std::string stamp = version.out + "scripts " + std::to_string(std::hash<std::string>{}(scripts));
  if (read_file_if_present(out + "/stamp") != stamp || !fs::exists(out + "/scores.csv")) {
    fs::create_directories(out);
    fs::remove(out + "/stamp");
    MESSAGE("generating PyTorch reference scores (torch " << version.out << ") in " << out);
    const auto gen = test::run_command(std::string(kPython) + " " + quoted(tools + "/score_reference.py") +
                                       " generate --photos " + quoted(photos) + " --out " + quoted(out));
    INFO(gen.out << gen.err);
    REQUIRE(gen.exit_code == 0);  // a broken generator is a failure, not a skip
    std::ofstream(out + "/stamp") << stamp;
  }
  ref.dir = out;
  std::istringstream digest(read_file_if_present(out + "/digest.txt"));
  digest >> ref.digest;
  std::istringstream lines(read_file_if_present(out + "/scores.csv"));
  std::string line;
  std::getline(lines, line);
  REQUIRE(line == "file,size,score");
  while (std::getline(lines, line)) {
    const auto c1 = line.find(','), c2 = line.rfind(',');
    REQUIRE(c1 != std::string::npos);
    const std::string path = line.substr(0, c1);
    ref.scores[{path, line.substr(c1 + 1, c2 - c1 - 1)}] = std::stod(line.substr(c2 + 1));
    if (ref.paths.empty() || ref.paths.back() != path) ref.paths.push_back(path);
  }
  ok = true;
  return &ref;
}

// Runs `aesthete score` on every reference photo and compares with PyTorch's scores.
void check_scores(const Reference& ref, const std::string& size_label, const std::string& size_flags) {
  std::string cmd = test::aesthete_binary() + " score --device cpu " + size_flags + " --model " +
                    quoted(ref.dir + "/model.pth");
  for (const auto& p : ref.paths) cmd += " " + quoted(p);
  const auto r = test::run_command(cmd);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::string line;
  std::getline(lines, line);
  REQUIRE(line == "path,score,stars");
  double worst = -1;
  std::string worst_path;
  int compared = 0;
  bool jpeg = false, png = false;
  while (std::getline(lines, line)) {
    const auto c1 = line.find(','), c2 = line.rfind(',');
    const std::string path = line.substr(0, c1);
    const double ours = std::stod(line.substr(c1 + 1, c2 - c1 - 1));
    const auto it = ref.scores.find({path, size_label});
    REQUIRE_MESSAGE(it != ref.scores.end(), "no reference score for " << path << " at size " << size_label);
    const double want = it->second;
    REQUIRE_MESSAGE(std::fabs(want) >= kMinReferenceMagnitude,
                    path << ": reference score " << want << " is too close to 0 for a relative comparison");
    const double rel = std::fabs(ours - want) / std::fabs(want);
    MESSAGE(size_label << " " << fs::path(path).filename().string() << ": aesthete " << ours << ", torch " << want
                       << ", relative error " << rel);
    CHECK_MESSAGE(rel <= kMaxRelativeError, path << " at size " << size_label << ": relative error " << rel);
    if (rel > worst) {
      worst = rel;
      worst_path = path;
    }
    jpeg = jpeg || path.ends_with(".jpg");
    png = png || path.ends_with(".png");
    ++compared;
  }
  CHECK(compared == static_cast<int>(ref.paths.size()));
  CHECK(compared >= 4);
  CHECK((jpeg && png));
  MESSAGE("size " << size_label << ": " << compared << " photos, worst relative error " << worst << " ("
                  << fs::path(worst_path).filename().string() << "), limit " << kMaxRelativeError);
}

}  // namespace

TEST_CASE("score parity: photos squashed to 224x224 (the default for a .pth without input_size)") {
  const Reference* ref = reference();
  if (ref == nullptr) return;
  check_scores(*ref, "224", "");
}

TEST_CASE("score parity: --size native") {
  const Reference* ref = reference();
  if (ref == nullptr) return;
  check_scores(*ref, "native", "--size native");
}

TEST_CASE("the 224x224 photo gives the same reference score at 224 and native size") {
  const Reference* ref = reference();
  if (ref == nullptr) return;
  const std::string square = ref->dir + "/square224.png";
  REQUIRE(ref->scores.count({square, "224"}) == 1);
  // Resizing to the same size is the identity in PyTorch, so the two reference runs are one input.
  CHECK(ref->scores.at({square, "224"}) == ref->scores.at({square, "native"}));
}

TEST_CASE("generic-model digest: torch-written .pth, Python's hashlib and our safetensors copy agree") {
  const Reference* ref = reference();
  if (ref == nullptr) return;
  REQUIRE(ref->digest.rfind("sha256:", 0) == 0);
  std::unique_ptr<model::ResNet18> from_pth = model::make_model(weights::load_model_file(ref->dir + "/model.pth"));
  CHECK(model::model_digest(*from_pth) == ref->digest);
  const std::string copy = ref->dir + "/model_copy.safetensors";
  model::save_checkpoint(copy, *from_pth);
  std::unique_ptr<model::ResNet18> from_safetensors = model::make_model(weights::load_model_file(copy));
  CHECK(model::model_digest(*from_safetensors) == ref->digest);
  fs::remove(copy);
}

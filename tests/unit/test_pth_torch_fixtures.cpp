// The .pth reader on files written by real PyTorch (Debian's torch 1.13 via /usr/bin/python3 and
// weights_tools/make_fixtures.py): torchvision's resnet18, every dtype, views, wrappers, a buffer-saved
// file, and the formats that must be refused. The script also writes expected.json (shapes, dtypes and
// checksums computed by torch), which every loaded tensor is compared against.
// Without /usr/bin/python3 or torch this whole binary reports itself skipped (exit 77), never passed.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "weights_tools/pth_reader.h"
#include "weights_tools/zip_reader.h"

using ae::weights::NamedTensors;
using ae::weights::read_pth;

namespace {

struct Fixtures {
  std::string dir;
  std::string skip_reason;  // non-empty: torch is not available here
  std::string error;        // non-empty: the generator failed (a test failure, not a skip)
  nlohmann::json expected;
};

Fixtures generate() {
  Fixtures f;
  const char* python = "/usr/bin/python3";
  if (::access(python, X_OK) != 0) {
    f.skip_reason = "no /usr/bin/python3: cannot write PyTorch fixtures";
    return f;
  }
  if (std::system("/usr/bin/python3 -c 'import torch, torchvision' > /dev/null 2>&1") != 0) {
    f.skip_reason = "/usr/bin/python3 cannot import torch and torchvision (install python3-torch python3-torchvision)";
    return f;
  }
  f.dir = ae::test::build_dir() + "/pth_fixtures";
  std::filesystem::create_directories(f.dir);
  const std::string log = f.dir + "/make_fixtures.log";
  const std::string cmd = std::string(python) + " '" + ae::test::source_dir() + "/weights_tools/make_fixtures.py' '" +
                          f.dir + "' > '" + log + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    f.error = "make_fixtures.py failed:\n" + ae::test::read_file_if_present(log);
    return f;
  }
  f.expected = nlohmann::json::parse(ae::test::read_file_if_present(f.dir + "/expected.json"));
  return f;
}

// Generated once per binary; returns nullptr (after marking the binary skipped) without torch.
const Fixtures* fixtures() {
  static const Fixtures f = generate();
  if (!f.skip_reason.empty()) {
    ae::test::skip_binary(f.skip_reason);
    return nullptr;
  }
  REQUIRE_MESSAGE(f.error.empty(), f.error);
  return &f;
}

// The ae::Error message of read_pth(path) (a failed check when it reads the file).
std::string error_of(const std::string& path) {
  return ae::test::error_of([&] { read_pth(path); });
}

std::vector<double> values_of(const ae::Tensor& t) {
  std::vector<double> v(static_cast<std::size_t>(t.numel()));
  if (t.dtype() == ae::DType::f32) {
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = t.f32()[i];
  } else {
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(t.data<int64_t>()[i]);
  }
  return v;
}

// Compares every tensor with what torch wrote into expected.json for this file.
void check_against_torch(const NamedTensors& got, const nlohmann::json& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const std::string& name = got[i].first;  // not a structured binding: CAPTURE's lambda takes it (clang 14)
    const ae::Tensor& t = got[i].second;
    const auto& w = want[i];
    CAPTURE(name);
    REQUIRE(name == w["name"].get<std::string>());
    CHECK(t.shape() == w["shape"].get<ae::Shape>());
    CHECK(t.dtype() == (w["is_float"].get<bool>() ? ae::DType::f32 : ae::DType::i64));
    const std::vector<double> v = values_of(t);
    double sum = 0, wsum = 0;
    for (std::size_t k = 0; k < v.size(); ++k) {
      sum += v[k];
      wsum += v[k] * static_cast<double>(k % 7 + 1);
    }
    // Same float32 values on both sides; only the summation order differs.
    const double tol = 1e-9 * w["abssum"].get<double>() + 1e-12;
    CHECK(std::fabs(sum - w["sum"].get<double>()) <= tol);
    CHECK(std::fabs(wsum - w["wsum"].get<double>()) <= 7 * tol);
    const auto first = w["first"].get<std::vector<double>>();
    REQUIRE(v.size() >= first.size());
    for (std::size_t k = 0; k < first.size(); ++k) CHECK(v[k] == first[k]);
    if (w.contains("values")) CHECK(v == w["values"].get<std::vector<double>>());
  }
}

TEST_CASE("torch fixtures: torchvision resnet18 state dict") {
  const Fixtures* f = fixtures();
  if (f == nullptr) return;
  const NamedTensors got = read_pth(f->dir + "/resnet18.pth");
  REQUIRE(got.size() == 122);
  int64_t numbers = 0;
  for (const auto& [name, t] : got) numbers += t.numel();
  CHECK(numbers == 11699132);
  CHECK(got.front().first == "conv1.weight");
  CHECK(got.front().second.shape() == ae::Shape{64, 3, 7, 7});  // OIHW, as PyTorch stores it
  CHECK(got.back().first == "fc.bias");
  CHECK(got[got.size() - 2].second.shape() == ae::Shape{1000, 512});
  CHECK(got[5].first == "bn1.num_batches_tracked");
  CHECK(got[5].second.dtype() == ae::DType::i64);
  CHECK(got[5].second.shape().empty());
  check_against_torch(got, f->expected["resnet18.pth"]);
}

TEST_CASE("torch fixtures: dtypes, views, wrappers, buffer prefix, dotted names, parameters") {
  const Fixtures* f = fixtures();
  if (f == nullptr) return;
  for (const char* file : {"dtypes.pth", "views.pth", "wrapped_state_dict.pth", "wrapped_model.pth", "buffer.pth",
                           "x.y.weights.pth", "parameter.pth"}) {
    CAPTURE(file);
    check_against_torch(read_pth(f->dir + "/" + file), f->expected[file]);
  }
  // The buffer-saved file really uses the archive/ prefix (so the prefix is not hard-coded).
  const ae::weights::MappedFile mapped(f->dir + "/buffer.pth");
  const ae::weights::ZipReader zip(mapped.bytes(), mapped.path());
  CHECK(zip.find("archive/data.pkl") != nullptr);
}

TEST_CASE("torch fixtures: other torch formats are refused with what they are and how to re-save") {
  const Fixtures* f = fixtures();
  if (f == nullptr) return;
  const std::string legacy = error_of(f->dir + "/legacy.pth");
  AE_CHECK_CONTAINS(legacy, "legacy non-zip format");
  AE_CHECK_CONTAINS(legacy, "torch.save(model.state_dict(), path)");
  const std::string script = error_of(f->dir + "/torchscript.pt");
  AE_CHECK_CONTAINS(script, "TorchScript archive");
  AE_CHECK_CONTAINS(script, "state_dict()");
  const std::string whole = error_of(f->dir + "/whole_model.pth");
  AE_CHECK_CONTAINS(whole, "'torchvision.models.resnet ResNet'");
  AE_CHECK_CONTAINS(whole, "whole model");
  AE_CHECK_CONTAINS(whole, "torch.save(model.state_dict(), path)");
  AE_CHECK_CONTAINS(whole, "member 'whole_model/data.pkl'");
}

TEST_CASE("torch fixtures: a truncated or corrupted resnet18 file is refused") {
  const Fixtures* f = fixtures();
  if (f == nullptr) return;
  const std::string bytes = [&] {
    std::ifstream in(f->dir + "/resnet18.pth", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  const std::string path = f->dir + "/damaged.pth";
  auto write = [&](const std::string& s) {
    std::ofstream(path, std::ios::binary).write(s.data(), static_cast<std::streamsize>(s.size()));
  };
  for (std::size_t cut : {std::size_t{3}, std::size_t{100}, std::size_t{15000}, bytes.size() / 2, bytes.size() - 7200,
                          bytes.size() - 60, bytes.size() - 1}) {
    CAPTURE(cut);
    write(bytes.substr(0, cut));
    const std::string msg = error_of(path);
    AE_CHECK_CONTAINS(msg, "damaged.pth");
  }
  // One flipped bit inside conv1.weight's storage: caught by the CRC-32 check.
  const ae::weights::MappedFile mapped(f->dir + "/resnet18.pth");
  const ae::weights::ZipReader zip(mapped.bytes(), mapped.path());
  const auto* member = zip.find("resnet18/data/0");
  REQUIRE(member != nullptr);
  CHECK(member->data_offset % 64 == 0);  // torch aligns storages
  std::string flipped = bytes;
  flipped[member->data_offset + 1000] ^= 0x01;
  write(flipped);
  AE_CHECK_CONTAINS(error_of(path), "member 'resnet18/data/0' fails its CRC-32 check");
  std::filesystem::remove(path);
}

}  // namespace

// Every input kept in tests/regressions/<target>/ (hostile inputs written by hand, and inputs the
// fuzzers of tests/fuzz found) replayed through the same entry point the libFuzzer binary of that
// target calls (tests/fuzz/targets.h). A target swallows ae::Error, the answer to bad input; any
// other exception fails this test, and a crash, a sanitizer report or a failed output check of the
// target ends the binary with a signal, which CTest reports as a failure naming the input last printed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/fuzz/targets.h"
#include "tests/support/check.h"
#include "tests/support/files.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> kept_inputs(const std::string& target) {
  const fs::path dir = fs::path(ae::test::source_dir()) / "tests" / "regressions" / target;
  std::vector<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("fuzz regressions: every kept input of every target runs to a clean end") {
  ae::fuzz::initialize();
  for (const ae::fuzz::Target& t : ae::fuzz::targets()) {
    const std::vector<fs::path> files = kept_inputs(t.name);
    CAPTURE(t.name);
    // Each target keeps at least one hostile input, so this test cannot pass by finding nothing.
    CHECK_MESSAGE(!files.empty(), "tests/regressions/" << t.name << "/ holds no inputs");
    for (const fs::path& f : files) {
      const std::string bytes = ae::test::read_file(f.string());
      std::fprintf(stderr, "fuzz regression %s: %s (%zu bytes)\n", t.name, f.filename().c_str(), bytes.size());
      std::string failure;
      try {
        t.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      } catch (const std::exception& e) {
        failure = e.what();
      } catch (...) {
        failure = "an exception that is not a std::exception";
      }
      CHECK_MESSAGE(failure.empty(), f.string() << " threw something other than ae::Error: " << failure);
    }
  }
}

TEST_CASE("fuzz regressions: every target folder belongs to a target") {
  const fs::path root = fs::path(ae::test::source_dir()) / "tests" / "regressions";
  REQUIRE(fs::is_directory(root));
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    const auto& all = ae::fuzz::targets();
    CHECK_MESSAGE(std::any_of(all.begin(), all.end(), [&](const ae::fuzz::Target& t) { return name == t.name; }),
                  "tests/regressions/" << name << " is not the folder of a fuzz target");
  }
}

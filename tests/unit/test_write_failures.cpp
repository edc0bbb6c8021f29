// A write that fails for lack of space (a file-size limit, RLIMIT_FSIZE, stands in for a full disk)
// leaves the previous file intact, leaves no temporary file, and says so in an ae::Error naming
// the file: checkpoints and user files (safetensors), photos (PNG, JPEG), recipes and reports
// (atomic_write). Each write runs in a child process, where the limit is set and SIGXFSZ ignored
// so that the write fails with EFBIG instead of killing the process.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "train/image.h"

namespace {

// Runs `write` in a child limited to `max_file_bytes` per file; returns the ae::Error message it
// got ("<no error>" when the write succeeded, "<child died>" when it did not end normally).
std::string failed_write_message(const std::function<void()>& write, rlim_t max_file_bytes, const std::string& scratch) {
  const std::string report = scratch + "/child_message.txt";
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{};
    if (::getrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
    const rlim_t hard = limit.rlim_max;
    limit.rlim_cur = max_file_bytes;  // the soft limit only: it can be raised again below
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(3);
    std::string message = "<no error>";
    try {
      write();
    } catch (const ae::Error& e) {
      message = e.what();
    }
    limit.rlim_cur = hard;
    ::setrlimit(RLIMIT_FSIZE, &limit);
    FILE* f = std::fopen(report.c_str(), "w");
    if (f == nullptr) ::_exit(4);
    std::fputs(message.substr(0, 3000).c_str(), f);
    std::fclose(f);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "<child died>";
  return ae::test::read_file(report);
}

}  // namespace

TEST_CASE("a write that runs out of space leaves the previous file intact, no temporary file, and says so") {
  const ae::test::TempDir dir;
  const ae::test::TempDir scratch;  // the child's report lives outside `dir`
  struct Case {
    const char* name;
    std::function<void(const std::string&)> write;  // writes about 1 MB to the path
  };
  const std::vector<Case> cases = {
      {"model.safetensors",
       [](const std::string& p) {
         ae::st::write_safetensors(p, {{"w", ae::Tensor::full({256, 1024}, 0.25f)}}, {{"format", "aesthete"}});
       }},
      {"photo.png",
       [](const std::string& p) {
         ae::img::Image im;
         im.width = 600;
         im.height = 600;
         im.rgb.resize(600 * 600 * 3);
         std::mt19937 noise(7);  // incompressible: the PNG stays about 1 MB
         for (uint8_t& v : im.rgb) v = static_cast<uint8_t>(noise() >> 24);
         ae::img::write_png(p, im);
       }},
      {"report.html", [](const std::string& p) { const std::string text(1 << 20, 'x'); ae::atomic_write(p, text.data(), text.size()); }},
  };
  for (const Case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const std::string path = dir.file(c.name);
    const std::string previous = std::string("previous version of ") + c.name;
    ae::test::write_file(path, previous);
    const std::string msg = failed_write_message([&] { c.write(path); }, 64 * 1024, scratch.path.string());
    AE_CHECK_CONTAINS(msg, "'" + path + "'");
    AE_CHECK_CONTAINS(msg, "File too large");
    AE_CHECK_CONTAINS(msg, "'" + path + "' was not changed (an earlier version, if any, is intact)");
    CHECK(ae::test::read_file(path) == previous);
    CHECK(dir.entries().size() == 1);  // no temporary file left beside it
    std::filesystem::remove(path);
  }
  // The same writes succeed without the limit (the cases are real writes, not failures by design).
  for (const Case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    c.write(dir.file(c.name));
    CHECK(std::filesystem::file_size(dir.file(c.name)) > 64 * 1024);
  }
}

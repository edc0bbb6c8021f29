// A write into a read-only folder fails, leaves the previous file intact and no temporary file,
// and says so naming the file: checkpoints and user files (safetensors), photos (PNG), recipes and
// reports (atomic_write), and `aesthete convert` (exit status 1, not a signal).
//
// CI runs as root, where a chmod 0555 folder is still writable. So each write runs in a child
// process that sees the folder through a read-only bind mount in a mount namespace of its own
// (unshare(CLONE_NEWNS), as root; or a user namespace plus a mount namespace, where unprivileged
// user namespaces are allowed); a user other than root may also fall back to chmod 0555. The child
// first checks that creating a file there really fails. When no way works, the whole binary
// reports SKIPPED (exit 77) with each way's reason; this file holds nothing else, so that a skip
// hides no other check. (The out-of-space cases are in test_write_failures.cpp.)
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/image.h"

namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

bool write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  return static_cast<bool>(f);
}

// Makes `dir` read-only for this process (and its children) by a read-only bind mount in a new
// mount namespace. "" on success, else why not.
std::string bind_read_only(const std::string& dir) {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return "mount --make-rprivate /: " + errno_text();
  if (::mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0) return "bind mount: " + errno_text();
  if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
    return "read-only remount: " + errno_text();
  return "";
}

// "" when creating a file in `dir` fails (what the test needs), else what happened.
std::string probe_read_only(const std::string& dir) {
  const std::string probe = dir + "/.probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return "";
  ::close(fd);
  ::unlink(probe.c_str());
  return "the folder was still writable";
}

// Tries each way to make `dir` read-only for this (child) process; returns the way that worked, or
// "" with `why` saying why each failed.
std::string make_read_only(const std::string& dir, std::string& why) {
  if (::unshare(CLONE_NEWNS) != 0) {
    why += "unshare(CLONE_NEWNS): " + errno_text() + "; ";
  } else {
    std::string e = bind_read_only(dir);
    if (e.empty()) e = probe_read_only(dir);
    if (e.empty()) return "read-only bind mount";
    why += "read-only bind mount: " + e + "; ";
  }
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
    why += "unshare(CLONE_NEWUSER | CLONE_NEWNS): " + errno_text() + "; ";
  } else {
    std::string e;
    if (!write_text("/proc/self/setgroups", "deny") ||
        !write_text("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1\n") ||
        !write_text("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1\n"))
      e = "writing the user namespace's id maps failed";
    if (e.empty()) e = bind_read_only(dir);
    if (e.empty()) e = probe_read_only(dir);
    if (e.empty()) return "read-only bind mount in a user namespace";
    why += "user namespace: " + e + "; ";
  }
  if (::chmod(dir.c_str(), 0555) != 0) {
    why += "chmod 0555: " + errno_text();
  } else {
    const std::string e = probe_read_only(dir);
    if (e.empty()) return "chmod 0555";
    why += "chmod 0555: " + e + (uid == 0 ? " (root ignores permissions)" : "");
  }
  return "";
}

struct Case {
  const char* name;
  std::function<void(const std::string&)> write;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"model.safetensors",
       [](const std::string& p) {
         ae::st::write_safetensors(p, {{"w", ae::Tensor::full({16, 16}, 0.25f)}}, {{"format", "aesthete"}});
       }},
      {"photo.png",
       [](const std::string& p) {
         ae::img::Image im;
         im.width = 8;
         im.height = 8;
         im.rgb.assign(8 * 8 * 3, 128);
         ae::img::write_png(p, im);
       }},
      {"recipe.json", [](const std::string& p) { ae::atomic_write(p, "{}\n", 3); }},
  };
  return c;
}

// What the child saw, one line per field: "way <how>" or "skip <why>", then per case "message
// <text>" and for the CLI "exit <status>" and "stderr <text>" (newlines replaced by spaces).
struct ChildReport {
  std::string way, skip;
  std::vector<std::string> messages;
  int convert_status = -1;
  std::string convert_err;
};

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

ChildReport run_child(const std::string& dir, const std::string& scratch, const std::string& convert_command) {
  const std::string report = scratch + "/child_report.txt";
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::ostringstream out;
    std::string why;
    const std::string way = make_read_only(dir, why);
    if (way.empty()) {
      out << "skip " << one_line(why) << "\n";
    } else {
      out << "way " << way << "\n";
      for (const Case& c : cases()) {
        std::string message = "<no error>";
        try {
          c.write(dir + "/" + c.name);
        } catch (const ae::Error& e) {
          message = e.what();
        } catch (const std::exception& e) {
          message = std::string("<not an ae::Error> ") + e.what();
        }
        out << "message " << one_line(message) << "\n";
      }
      const int status = std::system((convert_command + " 2> " + scratch + "/convert.err").c_str());
      out << "exit " << (WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0))
          << "\n";
      std::ifstream err(scratch + "/convert.err");
      std::stringstream ss;
      ss << err.rdbuf();
      out << "stderr " << one_line(ss.str()) << "\n";
    }
    if (!write_text(report, out.str())) ::_exit(4);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  ChildReport r;
  std::istringstream in(ae::test::read_file(report));
  std::string line;
  while (std::getline(in, line)) {
    const std::string key = line.substr(0, line.find(' ')), value = line.substr(line.find(' ') + 1);
    if (key == "way") r.way = value;
    if (key == "skip") r.skip = value;
    if (key == "message") r.messages.push_back(value);
    if (key == "exit") r.convert_status = std::stoi(value);
    if (key == "stderr") r.convert_err = value;
  }
  return r;
}

}  // namespace

TEST_CASE("a write into a read-only folder leaves the previous file intact, no temporary file, and says so") {
  const ae::test::TempDir dir;
  const ae::test::TempDir scratch;  // the child's report and the CLI's input live outside `dir`
  const std::string folder = dir.path.string();
  for (const Case& c : cases()) ae::test::write_file(dir.file(c.name), std::string("previous version of ") + c.name);
  // `aesthete convert` over an existing file in the folder.
  const std::string model_in = scratch.file("in.safetensors");
  {
    ae::model::ModelConfig cfg;
    cfg.head = ae::model::HeadType::linear;
    ae::model::ResNet18 net(cfg);
    ae::model::save_checkpoint(model_in, net);
  }
  const std::string converted = dir.file("converted.safetensors");
  ae::test::write_file(converted, "previous converted file");
  const std::string convert_command = ae::test::aesthete_binary() + " convert " + model_in + " " + converted;

  const ChildReport r = run_child(folder, scratch.path.string(), convert_command);
  // The child may have chmod'ed the folder; the parent sees it as before from here on.
  std::error_code ec;
  fs::permissions(dir.path, fs::perms::owner_all, fs::perm_options::add, ec);
  if (!r.skip.empty()) {
    MESSAGE("SKIPPED: no way to make a folder read-only here: " << r.skip);
    ae::test::skip_binary("no way to make a folder read-only for this process: " + r.skip);
    return;
  }
  MESSAGE("the folder was made read-only by: " << r.way);
  REQUIRE(r.messages.size() == cases().size());
  const std::string reason = r.way == "chmod 0555" ? "Permission denied" : "Read-only file system";
  for (std::size_t i = 0; i < cases().size(); ++i) {
    const std::string path = dir.file(cases()[i].name);
    CAPTURE(path);
    const std::string& msg = r.messages[i];
    AE_CHECK_CONTAINS(msg, "cannot write '" + path + "'");
    AE_CHECK_CONTAINS(msg, reason);
    AE_CHECK_CONTAINS(msg, "'" + path + "' was not changed (an earlier version, if any, is intact)");
    CHECK(ae::test::read_file(path) == std::string("previous version of ") + cases()[i].name);
  }
  CHECK(r.convert_status == 1);  // an error, not a signal (signals are reported as 1000 + number)
  AE_CHECK_CONTAINS(r.convert_err, "error: cannot write '" + converted + "'");
  AE_CHECK_CONTAINS(r.convert_err, "'" + converted + "' was not changed");
  CHECK(ae::test::read_file(converted) == "previous converted file");
  CHECK(dir.entries().size() == cases().size() + 1);  // no temporary file left beside them

  // The same writes succeed in the folder when it is writable (the cases can write at all).
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    c.write(dir.file(c.name));
    CHECK(ae::test::read_file(dir.file(c.name)) != std::string("previous version of ") + c.name);
  }
  const auto ok = ae::test::run_command(convert_command);
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
}

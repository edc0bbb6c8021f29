// runtime/atomic_file: the destination holds either its old content or the complete new
// content, never a partial file, and no temporary files are left behind.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"

namespace fs = std::filesystem;

namespace {

using ae::test::error_of;
using ae::test::read_file;
using ae::test::TempDir;

}  // namespace

TEST_CASE("atomic_write: callback content lands at the destination, nothing else in the directory") {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  ae::atomic_write(path, [&](std::FILE* f) {
    ae::write_all(f, "hello ", 6, path);
    ae::write_all(f, "world", 5, path);
  });
  CHECK(read_file(path) == "hello world");
  CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
}

TEST_CASE("atomic_write: byte buffer, binary content with NULs, empty file, and replacing a file") {
  TempDir dir;
  const std::string path = dir.file("data");
  std::string bytes(1000, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  ae::atomic_write(path, bytes.data(), bytes.size());
  CHECK(read_file(path) == bytes);

  ae::atomic_write(path, "new", 3);  // replaces, does not append
  CHECK(read_file(path) == "new");

  ae::atomic_write(path, nullptr, 0);
  CHECK(fs::file_size(path) == 0);
  CHECK(dir.entries() == std::vector<std::string>{"data"});
}

TEST_CASE("atomic_write: a relative path in the current directory works") {
  TempDir dir;
  const fs::path old_cwd = fs::current_path();
  fs::current_path(dir.path);
  ae::atomic_write("plain.txt", "abc", 3);
  fs::current_path(old_cwd);
  CHECK(read_file(dir.file("plain.txt")) == "abc");
  CHECK(dir.entries() == std::vector<std::string>{"plain.txt"});
}

TEST_CASE("atomic_write: a callback that throws midway leaves the old file untouched and no temp file") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  ae::atomic_write(path, "old content", 11);

  struct WriterFailed : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  CHECK_THROWS_AS(ae::atomic_write(path,
                                   [&](std::FILE* f) {
                                     ae::write_all(f, "half of the new", 15, path);
                                     std::fflush(f);  // the partial bytes really are on disk
                                     throw WriterFailed("disk exploded");
                                   }),
                  WriterFailed);
  CHECK(read_file(path) == "old content");
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  // Same when there was no old file: nothing appears at all.
  const std::string fresh = dir.file("fresh.bin");
  CHECK_THROWS_AS(ae::atomic_write(fresh, [](std::FILE*) { throw ae::Error("stop"); }), ae::Error);
  CHECK_FALSE(fs::exists(fresh));
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("atomic_write: missing directory and a file used as a directory give clear errors") {
  TempDir dir;
  const std::string missing = dir.file("no_such_dir/out.bin");
  const std::string msg = error_of([&] { ae::atomic_write(missing, "x", 1); });
  CHECK(msg.find(missing) != std::string::npos);
  CHECK(msg.find("No such file or directory") != std::string::npos);

  ae::atomic_write(dir.file("regular"), "x", 1);
  const std::string under_file = dir.file("regular/out.bin");
  const std::string msg2 = error_of([&] { ae::atomic_write(under_file, "x", 1); });
  CHECK(msg2.find(under_file) != std::string::npos);
  CHECK(msg2.find("Not a directory") != std::string::npos);
}

TEST_CASE("atomic_write: an unwritable directory gives a clear error naming the path") {
  // Root ignores directory permissions, so as root use sysfs, which refuses new files to everyone.
  TempDir dir;
  std::string target;
  if (::geteuid() == 0) {
    REQUIRE_MESSAGE(fs::is_directory("/sys/kernel"), "running as root needs /sys for an unwritable directory");
    target = "/sys/kernel/ae_atomic_test.bin";
  } else {
    const fs::path ro = dir.path / "read_only";
    fs::create_directory(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    target = (ro / "out.bin").string();
  }
  const std::string msg = error_of([&] { ae::atomic_write(target, "x", 1); });
  INFO(msg);
  CHECK(msg.find(target) != std::string::npos);
  CHECK(msg.find("Permission denied") != std::string::npos);
  CHECK_FALSE(fs::exists(target));
}

TEST_CASE("atomic_write: when the rename fails the temp file is removed and the error says why") {
  TempDir dir;
  // A non-empty directory at the destination: the content is written, the rename is refused.
  const std::string path = dir.file("taken");
  fs::create_directory(path);
  ae::atomic_write(dir.file("taken/inside"), "x", 1);
  const std::string msg = error_of([&] { ae::atomic_write(path, "abc", 3); });
  INFO(msg);
  CHECK(msg.find(path) != std::string::npos);
  CHECK(msg.find("renaming") != std::string::npos);
  CHECK(fs::is_directory(path));
  CHECK(dir.entries() == std::vector<std::string>{"taken"});
}

TEST_CASE("atomic_write: a write error reported by the stream becomes an ae::Error and cleans up") {
  TempDir dir;
  const std::string path = dir.file("bad_stream");
  // Reading from a write-only stream sets its error flag, like a failed write would.
  const std::string msg = error_of([&] {
    ae::atomic_write(path, [](std::FILE* f) {
      ae::write_all(f, "abc", 3, "x");
      (void)std::fgetc(f);
    });
  });
  INFO(msg);
  CHECK(msg.find(path) != std::string::npos);
  CHECK_FALSE(fs::exists(path));
  CHECK(dir.entries().empty());
}

TEST_CASE("atomic_write: an empty path is refused") {
  CHECK(error_of([] { ae::atomic_write("", "x", 1); }).find("empty") != std::string::npos);
}

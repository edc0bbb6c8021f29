#include "runtime/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "runtime/error.h"

namespace ae {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string directory_of(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// A name that no other writer (thread or process) picks: pid, a per-process counter and the
// clock. O_EXCL below still guards against a collision, and we simply try another name.
std::string temporary_name(const std::string& path, int attempt) {
  static std::atomic<unsigned long> counter{0};
  const std::filesystem::path p(path);
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  std::string name = "." + p.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                     std::to_string(counter++) + "-" + std::to_string(ticks % 1000000007) + "-" +
                     std::to_string(attempt);
  return (p.parent_path() / name).string();
}

// Opens a new temporary file for writing with the permissions a plain fopen would give
// (0666 minus the umask), so the published file looks like any other file we write.
std::FILE* create_temporary(const std::string& path, std::string& tmp_path) {
  int fd = -1;
  int err = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp_path = temporary_name(path, attempt);
    fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) break;
    err = errno;
    if (err != EEXIST) break;
  }
  AE_CHECK(fd >= 0, "cannot write '" << path << "': cannot create a temporary file in directory '"
                                     << directory_of(path) << "': " << errno_text(err) << "; '" << path
                                     << "' was not changed (an earlier version, if any, is intact)");
  std::FILE* file = ::fdopen(fd, "wb");
  if (file == nullptr) {
    err = errno;
    ::close(fd);
    ::unlink(tmp_path.c_str());
    AE_FAIL("cannot write '" << path << "': fdopen of temporary file '" << tmp_path << "' failed: "
                             << errno_text(err));
  }
  return file;
}

// Flushes user-space buffers and the kernel's page cache for the file, then closes it.
// Returns 0 or the errno of the first failing step; the stream is closed in every case.
int flush_sync_close(std::FILE* file) {
  int err = 0;
  if (std::fflush(file) != 0) err = errno;
  if (err == 0 && std::ferror(file)) err = EIO;
  if (err == 0 && ::fsync(::fileno(file)) != 0) err = errno;
  if (std::fclose(file) != 0 && err == 0) err = errno;
  return err;
}

// Makes the rename durable. Some filesystems cannot fsync a directory (EINVAL); there is
// nothing more we can do there, and the rename itself has already happened atomically.
void sync_directory(const std::string& path) {
  const std::string dir = directory_of(path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  AE_CHECK(fd >= 0, "wrote '" << path << "' but cannot open its directory '" << dir
                              << "' to sync it: " << errno_text(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  AE_CHECK(rc == 0 || err == EINVAL, "wrote '" << path << "' but syncing its directory '" << dir
                                               << "' failed: " << errno_text(err));
}

}  // namespace

void write_all(std::FILE* file, const void* data, std::size_t bytes, const std::string& what) {
  if (bytes == 0) return;
  const std::size_t written = std::fwrite(data, 1, bytes, file);
  AE_CHECK(written == bytes, "short write to '" << what << "': wrote " << written << " of " << bytes
                                                << " bytes: " << errno_text(errno));
}

void atomic_write(const std::string& path, const std::function<void(std::FILE*)>& write_body) {
  AE_CHECK(!path.empty(), "atomic_write: empty destination path");
  std::string tmp_path;
  std::FILE* file = create_temporary(path, tmp_path);
  // Until the rename, `path` itself is untouched: every failure before it says so.
  const std::string unchanged = "; '" + path + "' was not changed (an earlier version, if any, is intact)";
  try {
    write_body(file);
  } catch (const Error& e) {
    std::fclose(file);
    ::unlink(tmp_path.c_str());
    throw Error(e.what() + unchanged);
  } catch (...) {
    std::fclose(file);
    ::unlink(tmp_path.c_str());
    throw;
  }
  const int err = flush_sync_close(file);
  if (err != 0) {
    ::unlink(tmp_path.c_str());
    AE_FAIL("cannot write '" << path << "': writing temporary file '" << tmp_path
                             << "' failed: " << errno_text(err) << unchanged);
  }
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    ::unlink(tmp_path.c_str());
    AE_FAIL("cannot write '" << path << "': renaming temporary file '" << tmp_path
                             << "' over it failed: " << errno_text(rename_err) << unchanged);
  }
  sync_directory(path);
}

void prepare_output_dir(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  AE_CHECK(!dir.empty(), what << ": empty path");
  const std::string head = what + " '" + dir + "': ";
  fs::path target = fs::path(dir).lexically_normal();
  if (!target.has_filename() && target.has_relative_path()) target = target.parent_path();  // "a/b/" -> "a/b"

  // The folders to create (innermost first) up to the nearest path that exists.
  std::vector<fs::path> missing;
  fs::path at = target;
  fs::file_status st;
  for (;;) {
    std::error_code ec;
    st = fs::status(at, ec);  // ENOENT and ENOTDIR: not_found
    if (st.type() != fs::file_type::not_found) {
      AE_CHECK(!ec, head << "cannot look at '" << at.string() << "': " << ec.message());
      break;
    }
    missing.push_back(at);
    const fs::path up = at.parent_path();
    at = up.empty() ? fs::path(".") : up;
  }
  if (!fs::is_directory(st)) {
    const char* what_it_is = fs::is_regular_file(st) ? "a file, not a folder" : "not a folder";
    AE_CHECK(!missing.empty(), head << "it exists and is " << what_it_is);
    AE_FAIL(head << "'" << at.string() << "' is " << what_it_is);
  }

  // Undoes what this call created when a later step fails.
  std::vector<fs::path> created;
  const auto remove_created = [&] {
    for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());
  };
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0777) == 0) {
      created.push_back(*it);
      continue;
    }
    const int err = errno;
    if (err == EEXIST && fs::is_directory(*it)) continue;  // made meanwhile by another process
    remove_created();
    const fs::path parent = it->parent_path().empty() ? fs::path(".") : it->parent_path();
    if (*it == target) AE_FAIL(head << "cannot create it in '" << parent.string() << "': " << errno_text(err));
    AE_FAIL(head << "cannot create its parent folder '" << it->string() << "': " << errno_text(err));
  }

  // A folder can exist and still refuse files (permissions, a read-only filesystem): try one.
  const std::string probe = (target / (".aesthete-write-test-" + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0 && errno != EEXIST) {
    const int err = errno;
    remove_created();
    AE_FAIL(head << "cannot create files in it: " << errno_text(err));
  }
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
  }
}

void atomic_write(const std::string& path, const void* data, std::size_t bytes) {
  atomic_write(path, [&](std::FILE* file) { write_all(file, data, bytes, path); });
}

}  // namespace ae

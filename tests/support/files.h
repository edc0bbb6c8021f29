#pragma once
// Scratch files for tests: unique temporary paths and directories, whole-file reads and writes.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ae::test {

// A path in the system temp directory, unique to this test process: ae_test_<pid>_<name>.
// Nothing removes it; tests that care remove it themselves or use TempDir.
std::string temp_path(const std::string& name);

// A fresh empty directory, removed with everything in it when the TempDir goes (after giving the
// owner back write permission, so a test may make it read-only).
struct TempDir {
  std::filesystem::path path;

  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const;
  std::vector<std::string> entries() const;  // the file names in it, in directory order
};

// The Debian sample photos (scripts/fetch_test_photos.sh), fetched once per process into
// build_dir()/test-photos; "" when they cannot be had (the caller skips, never passes).
const std::string& test_photos_dir();

// The whole file; a failed check (fatal) when it cannot be opened.
std::string read_file(const std::string& path);
// The whole file, or "" when it cannot be opened (e.g. a cache stamp not written yet).
std::string read_file_if_present(const std::string& path);
// Writes (replaces) the file; a failed check (fatal) when it cannot be written.
void write_file(const std::string& path, const std::string& bytes);

// A comma-separated file with a header row and no quoted fields (what our commands write:
// results.csv, attributes.csv, metrics.csv), as one column -> value map per row; a failed check
// (fatal) when a row has another number of fields than the header.
std::vector<std::map<std::string, std::string>> read_csv_rows(const std::string& path);

}  // namespace ae::test

#include "tests/support/files.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>

#include "tests/support/check.h"

namespace fs = std::filesystem;

namespace ae::test {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("ae_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

TempDir::TempDir() {
  static int counter = 0;
  path = temp_path("dir" + std::to_string(counter++));
  fs::remove_all(path);
  fs::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path, ec);
}

std::string TempDir::file(const std::string& name) const { return (path / name).string(); }

std::vector<std::string> TempDir::entries() const {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
  return names;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string read_file_if_present(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::map<std::string, std::string>> read_csv_rows(const std::string& path) {
  std::istringstream in(read_file(path));
  auto split = [](const std::string& line) {
    std::vector<std::string> fields(1);
    for (char c : line) {
      if (c == ',') fields.emplace_back();
      else if (c != '\r') fields.back() += c;
    }
    return fields;
  };
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto fields = split(line);
    REQUIRE_MESSAGE(fields.size() == header.size(), path << ": a row of " << fields.size() << " fields under a header of "
                                                         << header.size());
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < fields.size(); ++i) row[header[i]] = fields[i];
    rows.push_back(std::move(row));
  }
  return rows;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE_MESSAGE(out.good(), "cannot write " << path);
}

const std::string& test_photos_dir() {
  static const std::string dir = [] {
    const std::string target = build_dir() + "/test-photos";
    const std::string cmd = "bash '" + source_dir() + "/scripts/fetch_test_photos.sh' '" + target + "' >&2";
    if (std::system(cmd.c_str()) != 0) return std::string();
    return target;
  }();
  return dir;
}

}  // namespace ae::test

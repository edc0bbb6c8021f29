#include "apps/demo_photos.h"

#include <spawn.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "runtime/error.h"
#include "runtime/log.h"

extern char** environ;

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct Source {
  const char* package;
  const char* folder;  // inside the package
};

// Where each photo lives in Debian 12's packages.
const std::map<std::string, Source>& known_photos() {
  static const Source skimage{"python3-skimage", "usr/lib/python3/dist-packages/skimage/data"};
  static const Source matplotlib{"python-matplotlib-data", "usr/share/matplotlib/mpl-data/sample_data"};
  static const Source sklearn{"python3-sklearn", "usr/lib/python3/dist-packages/sklearn/datasets/images"};
  static const std::map<std::string, Source> photos = {
      {"astronaut.png", skimage},    {"chelsea.png", skimage},  {"coffee.png", skimage},
      {"camera.png", skimage},       {"rocket.jpg", skimage},   {"motorcycle_left.png", skimage},
      {"hubble_deep_field.jpg", skimage}, {"grace_hopper.jpg", matplotlib},
      {"china.jpg", sklearn},        {"flower.jpg", sklearn}};
  return photos;
}

// Runs argv in `cwd` with stdout and stderr sent to `log`; returns the exit status (or -1).
int run_quietly(const std::vector<std::string>& argv, const std::string& cwd, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool have(const char* tool) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t end = p.find(':', start);
    const std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!dir.empty() && access((fs::path(dir) / tool).c_str(), X_OK) == 0) return true;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return false;
}

std::string how_by_hand(const std::string& dir) {
  return "put the photos into " + dir + " by hand (from Debian's python3-skimage, python-matplotlib-data and "
         "python3-sklearn packages), or pass --photos with a folder that holds them";
}

}  // namespace

std::string default_photo_cache() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0')
    return (fs::path(x) / "aesthete" / "photos").string();
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0')
    return (fs::path(h) / ".cache" / "aesthete" / "photos").string();
  return "aesthete-photos";
}

void ensure_debian_photos(const std::string& dir, const std::vector<std::string>& names) {
  std::set<std::string> packages;
  std::vector<std::string> missing;
  for (const std::string& n : names) {
    std::error_code ec;
    if (fs::is_regular_file(fs::path(dir) / n, ec) && fs::file_size(fs::path(dir) / n, ec) > 0) continue;
    const auto it = known_photos().find(n);
    AE_CHECK(it != known_photos().end(), "photo '" << n << "' is not in " << dir
                                                    << " and is not one of the Debian photos the demo can fetch");
    missing.push_back(n);
    packages.insert(it->second.package);
  }
  if (missing.empty()) return;
  for (const char* tool : {"apt-get", "dpkg-deb"})
    AE_CHECK(have(tool), "fetching the demo photos needs " << tool << " (Debian); " << how_by_hand(dir));
  fs::create_directories(dir);
  const fs::path work = fs::path(dir) / (".fetch-" + std::to_string(getpid()));
  fs::remove_all(work);
  fs::create_directories(work / "root");
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{work};
  const std::string log = (work / "log.txt").string();
  std::vector<std::string> download = {"apt-get", "download", "-q"};
  download.insert(download.end(), packages.begin(), packages.end());
  AE_INFO("fetching " << missing.size() << " photos from Debian's packages (apt-get download, nothing installed) into "
                      << dir);
  if (run_quietly(download, work.string(), log) != 0) {
    AE_INFO("apt-get download failed; running apt-get update and trying again");
    run_quietly({"apt-get", "update", "-q"}, work.string(), log);
    AE_CHECK(run_quietly(download, work.string(), log) == 0,
             "could not download " << packages.size() << " Debian packages with apt-get download (log: " << log
                                   << ", removed on exit); " << how_by_hand(dir));
  }
  for (const auto& entry : fs::directory_iterator(work))
    if (entry.path().extension() == ".deb")
      AE_CHECK(run_quietly({"dpkg-deb", "-x", entry.path().string(), (work / "root").string()}, work.string(), log) == 0,
               "dpkg-deb -x " << entry.path().string() << " failed; " << how_by_hand(dir));
  for (const std::string& n : missing) {
    const fs::path from = work / "root" / known_photos().at(n).folder / n;
    std::error_code ec;
    AE_CHECK(fs::is_regular_file(from, ec), "package " << known_photos().at(n).package << " does not hold " << n
                                                        << " where expected (" << known_photos().at(n).folder << "); "
                                                        << how_by_hand(dir));
    const fs::path tmp = fs::path(dir) / ("." + n + ".tmp");
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, fs::path(dir) / n);  // whole files only: a killed fetch never leaves half a photo
  }
  AE_INFO("cached " << missing.size() << " photos in " << dir);
}

}  // namespace ae::app

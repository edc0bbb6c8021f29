// aesthete demo: the whole product on real photos and simulated people, ending in one page.
//
// Every step is the aesthete command line itself, run as a child process with the exact arguments
// the page lists under "Reproduce each step": nothing is special-cased for the demo, the numbers
// on the page are what those commands wrote, and each command's own progress shows as it runs.
// Steps: the photos (Debian packages, cached) -> make-dataset --from-photos -> train (generic) ->
// personalise (adapters with --fit-all; head and full for comparison) -> enhance (each held-out
// photo, generic and per person) -> saliency (generic, and each person minus generic) -> the page.
// A departure from DESIGN.md's "apps/ parses and prints": this command orchestrates processes, on
// purpose, so that the commands a reader copies from the page are the ones that produced it.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "apps/commands.h"
#include "apps/demo_page.h"
#include "apps/demo_photos.h"
#include "runtime/error.h"
#include "train/photo_people.h"

extern char** environ;

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct DemoArgs {
  std::string out = "aesthete-demo", device = "auto", photos;
  bool quick = false;
  uint64_t seed = 1;
};

// The demo's sizes: chosen so that the full demo stays within 10 minutes on a 2-core CPU without a
// GPU (bench/RESULTS.md records the measured time) and --quick within a few minutes (slow/test_demo).
DemoSettings settings_for(const DemoArgs& a) {
  DemoSettings s;
  s.quick = a.quick;
  s.device = resolve_device(a.device).str();  // resolved once: every step is told the same device
  if (a.quick) {
    s.side = 64, s.size = 56, s.variants = 60, s.people_variants = 25, s.ratings = 160, s.k = 100;
    s.train_epochs = 8, s.adapters_epochs = 8, s.head_epochs = 5, s.full_epochs = 4, s.enhance_steps = 8;
    s.smoothgrad = 4;
  } else {
    s.side = 72, s.size = 64, s.variants = 80, s.people_variants = 25, s.ratings = 180, s.k = 100;
    s.train_epochs = 10, s.adapters_epochs = 10, s.head_epochs = 8, s.full_epochs = 6, s.enhance_steps = 10;
    s.smoothgrad = 8;
  }
  return s;
}

// Runs aesthete subcommands as child processes of this very binary, in order, recording each.
class Steps {
 public:
  Steps(std::string shown_program, int total) : program_(std::move(shown_program)), total_(total) {}

  void run(const std::string& title, const std::vector<std::string>& args) {
    std::string command = program_;
    for (const auto& a : args) command += " " + shell_quote(a);
    std::printf("\n== [%d/%d] %s\n$ %s\n", ++started_, total_, title.c_str(), command.c_str());
    std::fflush(stdout);
    std::vector<std::string> argv = {program_};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& s : argv) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    const auto start = std::chrono::steady_clock::now();
    pid_t pid = 0;
    const int err = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, cargv.data(), environ);
    AE_CHECK(err == 0, "demo: could not start step '" << title << "': " << std::strerror(err));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
      AE_CHECK(errno == EINTR, "demo: waiting for step '" << title << "' failed: " << std::strerror(errno));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      AE_FAIL("demo: step " << started_ << " (" << title << ") failed ("
                            << (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                                  : "killed by signal " + std::to_string(WTERMSIG(status)))
                            << "); its command was:\n  " << command);
    done_.push_back({title, command, seconds});
  }
  // Folders the next commands write into, made here and listed with the commands.
  void make_folders(const std::vector<std::string>& dirs) {
    std::string command = "mkdir -p";
    for (const auto& d : dirs) {
      fs::create_directories(d);
      command += " " + shell_quote(d);
    }
    done_.push_back({"create the output folders of enhance and saliency", command, 0});
  }
  const std::vector<DemoStep>& done() const { return done_; }

 private:
  std::string program_;
  int total_, started_ = 0;
  std::vector<DemoStep> done_;
};

std::string num(int v) { return std::to_string(v); }

constexpr const char* kMarker = ".aesthete-demo";  // says that a folder is the demo's own

// A rerun starts clean (only the photo cache is reused), so the demo deletes its own subfolders
// of --out; it refuses to touch a folder with other contents that it did not make.
void prepare_out_dir(const std::string& out, const DemoLayout& L) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    AE_CHECK(fs::is_directory(out, ec), "demo: --out " << out << " is a file, not a folder");
    const bool empty = fs::directory_iterator(out, ec) == fs::directory_iterator();
    AE_CHECK(empty || fs::exists(fs::path(out) / kMarker, ec),
             "demo: --out " << out << " is not empty and was not made by `aesthete demo`; choose a new folder "
                            "(the demo replaces what it wrote before, and nothing else)");
  }
  fs::create_directories(out);
  for (const std::string& sub : {L.data, L.generic, L.personalise, L.enhance, L.saliency}) fs::remove_all(fs::path(out) / sub);
  fs::remove(fs::path(out) / "index.html", ec);
  std::FILE* f = std::fopen((fs::path(out) / kMarker).c_str(), "w");
  AE_CHECK(f != nullptr, "demo: cannot write into --out " << out << ": " << std::strerror(errno));
  std::fputs("made by aesthete demo; a rerun replaces this folder's contents\n", f);
  std::fclose(f);
}

void run_demo(const DemoArgs& a) {
  const DemoSettings s = settings_for(a);
  DemoLayout L;
  L.people = data::photo_people_names();
  for (const auto& h : data::default_held_out_photos()) L.held_out.push_back(fs::path(h).stem().string());

  prepare_out_dir(a.out, L);
  const std::string photos = a.photos.empty() ? default_photo_cache() : a.photos;
  std::vector<std::string> wanted = data::default_demo_photos();
  for (const auto& h : data::default_held_out_photos()) wanted.push_back(h);
  if (a.photos.empty()) ensure_debian_photos(photos, wanted);
  for (const auto& w : wanted)
    AE_CHECK(fs::is_regular_file(fs::path(photos) / w), "demo: --photos " << photos << " has no " << w);

  auto at = [&](const std::string& rel) { return (fs::path(a.out) / rel).string(); };
  const std::size_t people = L.people.size(), held = L.held_out.size();
  const int total = static_cast<int>(2 + L.modes.size() + 2 * held * (people + 1));
  Steps steps(command_line().empty() ? "aesthete" : command_line()[0], total);
  std::printf("aesthete demo: %s settings, %s, output in %s (photos cached in %s)\n", s.quick ? "--quick" : "full",
              s.device.c_str(), a.out.c_str(), photos.c_str());

  steps.run("make the data set: variants of real photos rated by simulated people",
            {"make-dataset", "--from-photos", photos, "--out", at(L.data), "--side", num(s.side), "--variants",
             num(s.variants), "--people-variants", num(s.people_variants), "--ratings-per-person", num(s.ratings),
             "--seed", std::to_string(a.seed)});
  steps.run("train the generic model on the anonymous raters' mean scores",
            {"train", "--train-csv", at(L.train_csv()), "--images", at(L.images()), "--out", at(L.generic), "--head",
             "linear", "--size", num(s.size), "--resize-to", num(s.side), "--epochs", num(s.train_epochs), "--batch",
             "32", "--lr", "1e-3", "--decay-every", "3", "--seed", std::to_string(a.seed), "--device", s.device});
  for (const std::string& mode : L.modes) {
    const int epochs = mode == "adapters" ? s.adapters_epochs : mode == "head" ? s.head_epochs : s.full_epochs;
    std::vector<std::string> args = {"personalise", "--model", at(L.model()), "--ratings", at(L.workers_csv()),
                                     "--images", at(L.images()), "--k", num(s.k), "--mode", mode, "--repeats", "1",
                                     "--epochs", num(epochs), "--size", num(s.size), "--out", at(L.mode_dir(mode)),
                                     "--seed", std::to_string(a.seed), "--device", s.device};
    if (mode == L.modes.front()) args.push_back("--fit-all");
    steps.run("personalise every person (" + mode + (mode == L.modes.front() ? ", and a user file each)" : ")"), args);
  }
  std::vector<std::string> folders;
  for (const std::string& stem : L.held_out)
    folders.insert(folders.end(), {at(L.enhance + "/" + stem), at(L.saliency + "/" + stem)});
  steps.make_folders(folders);
  for (const std::string& stem : L.held_out) {
    std::vector<std::string> who = {"generic"};
    who.insert(who.end(), L.people.begin(), L.people.end());
    for (const std::string& w : who) {
      std::vector<std::string> args = {"enhance", "--model", at(L.model()), "--input", at(L.held_out_photo(stem)),
                                       "--output", at(L.enhanced(stem, w)), "--mode", "global", "--steps",
                                       num(s.enhance_steps), "--device", s.device};
      if (w != "generic") args.insert(args.begin() + 3, {"--user", at(L.user_file(w))});
      steps.run("enhance " + stem + " for " + (w == "generic" ? "the generic model" : w), args);
    }
    for (const std::string& w : who) {
      std::vector<std::string> args = {"saliency", "--model", at(L.model()), "--input", at(L.held_out_photo(stem)),
                                       "--output", at(L.saliency_map(stem, w)), "--smoothgrad", num(s.smoothgrad),
                                       "--device", s.device};
      if (w != "generic") {
        args.insert(args.begin() + 3, {"--user", at(L.user_file(w))});
        args.push_back("--versus-generic");
      }
      steps.run("saliency of " + stem + (w == "generic" ? " (generic model)" : " (" + w + " minus generic)"), args);
    }
  }
  std::printf("%s", write_demo_page(a.out, L, s, steps.done()).c_str());
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "The whole pipeline on real photos (from Debian's packages) and simulated people: data set, generic training, "
      "personalisation, enhancement, saliency, and one page (DIR/index.html)");
  cmd->add_option("--out", a->out, "Output folder")->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_flag("--quick", a->quick, "Smaller images, fewer variants and epochs (a smoke run in a few minutes)");
  cmd->add_option("--photos", a->photos,
                  "Folder holding the photos (default: fetched once from Debian's packages into " +
                      default_photo_cache() + ")");
  cmd->add_option("--seed", a->seed, "Seed of the data set and of every training run")->capture_default_str();
  cmd->callback([a] { run_demo(*a); });
}

}  // namespace ae::app

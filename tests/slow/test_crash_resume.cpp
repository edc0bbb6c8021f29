// Crash safety end to end: `aesthete train` and a multi-user `aesthete personalise --fit-all` are
// killed with SIGKILL again and again at random moments, restarted each time as a user would
// (`--resume` when a saved state is there, a fresh start otherwise), and must end with exactly
// the files of an uninterrupted run. After every kill each published file in the output folder
// must be whole (it parses); only hidden temporary files (.NAME.tmp-*) may be left over.
//
// Three kills per command: one at a random delay after the start, two at random delays after the
// run saved one more unit (an epoch; a person's run). The delays are drawn from a seed as
// fractions of the time one unit took in the straight run: AE_CRASH_SEED=<n> replays the same
// fractions (the seed and the delays are printed), otherwise each run draws a new seed. Kept small
// (tiny images, few epochs) for CI's time.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <random>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/safetensors.h"
#include "runtime/error.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"
#include "tests/support/run_command.h"
#include "train/synthetic.h"

using namespace ae;
namespace fs = std::filesystem;

namespace {

std::string root() { return test::build_dir() + "/crash_resume"; }

// One small data set serves both commands: 60 generic training images, 40 rated by each person.
const data::PeopleDataset& dataset() {
  static const data::PeopleDataset d = [] {
    fs::remove_all(root());
    data::PeopleConfig c;
    c.count = 100;
    c.people_images = 40;
    c.ratings_per_person = 30;
    return data::make_people_dataset(root() + "/data", c);
  }();
  return d;
}

uint64_t crash_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("AE_CRASH_SEED");
    const uint64_t s = env != nullptr && *env != '\0' ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    MESSAGE("kill delays drawn from seed " << s << " (AE_CRASH_SEED=" << s << " replays them)");
    return s;
  }();
  return seed;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string sh_quote(const std::string& s) { return "'" + s + "'"; }

// Every published file under `out` is whole: safetensors files read, CSV files have a header,
// rows of its width and a final newline, JSON parses, HTML pages end with </html>. Hidden files
// must be temporary files of an atomic write (.NAME.tmp-N-N-N-N) whose NAME is of a kind we
// publish. Returns the number of temporary files seen.
int check_every_file_whole(const std::string& out, const std::string& when) {
  INFO("after " << when);
  int temporaries = 0;
  if (!fs::exists(out)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    if (!e.is_regular_file()) continue;
    const std::string path = e.path().string(), name = e.path().filename().string();
    INFO("file " << path);
    if (name[0] == '.') {
      // Only an atomic write's temporary file (runtime/atomic_file.cpp), of a kind we publish.
      static const std::regex temporary(R"(\.(.+)\.(safetensors|csv|json|html)\.tmp-[0-9-]+)");
      CHECK(std::regex_match(name, temporary));
      ++temporaries;
      continue;
    }
    const std::string ext = e.path().extension().string();
    const std::string bytes = test::read_file(path);
    if (ext == ".safetensors") {
      bool whole = true;
      std::string why;
      try {
        st::read_safetensors(path);
      } catch (const Error& err) {
        whole = false;
        why = err.what();
      }
      INFO(why);
      CHECK(whole);
    } else if (ext == ".csv") {
      REQUIRE(!bytes.empty());
      CHECK(bytes.back() == '\n');
      test::read_csv_rows(path);  // a row of another width than the header fails the test
    } else if (ext == ".json") {
      CHECK(nlohmann::json::accept(bytes));
    } else if (ext == ".html") {
      CHECK(bytes.ends_with("</html>\n"));
    } else {
      FAIL("a file kind this test does not know how to check: " << path);
    }
  }
  return temporaries;
}

// What a run of the chain ended with, for the messages.
std::string describe(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

struct Chain {
  std::string name;     // "train" or "personalise"
  std::string out;      // the output folder
  std::string state;    // the file whose presence means "a run can be resumed"
  std::function<std::string(bool resume)> command;
  std::function<int(const std::string& out)> progress;  // finished units (epochs, runs) the folder shows
  std::string resumed_line;       // what a resumed run prints
  std::function<void()> before_last;  // checks to run on the saved state before the final start
};

// A straight run, watched: when each unit (epoch, person's run) was saved.
struct Straight {
  std::string out, log;
  double seconds = 0;
  double first_unit_ms = 0;     // from the start to the first unit saved (start-up included)
  double shortest_unit_ms = 0;  // the shortest time between two units saved
};

Straight run_straight(const std::string& command, const std::string& out,
                      const std::function<int(const std::string&)>& progress, int total_units) {
  Straight r;
  r.out = out;
  r.log = out + ".log";
  const auto t0 = std::chrono::steady_clock::now();
  const std::string line = command + " > " + sh_quote(r.log) + " 2>&1";
  auto done = std::async(std::launch::async, [&] { return std::system(line.c_str()); });
  std::vector<double> saved_at;  // ms after the start when unit 1, 2, ... appeared
  const auto poll = [&] {
    const double now = 1000 * seconds_since(t0);
    for (int p = progress(out); static_cast<int>(saved_at.size()) < p;) saved_at.push_back(now);
  };
  while (done.wait_for(std::chrono::milliseconds(5)) != std::future_status::ready) poll();
  const int status = done.get();
  poll();
  r.seconds = seconds_since(t0);
  INFO(test::read_file_if_present(r.log));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(static_cast<int>(saved_at.size()) == total_units);
  r.first_unit_ms = saved_at[0];
  r.shortest_unit_ms = r.seconds * 1000;
  for (std::size_t i = 1; i < saved_at.size(); ++i)
    r.shortest_unit_ms = std::min(r.shortest_unit_ms, saved_at[i] - saved_at[i - 1]);
  MESSAGE("straight run " << out << ": " << r.seconds << " s, first unit saved after " << r.first_unit_ms
                          << " ms, shortest unit " << r.shortest_unit_ms << " ms");
  return r;
}

// Kills `c` at random moments, restarting it after each kill, then lets it finish:
//  1. at a delay after its start uniform in [0, half the time the straight run took to save its
//     first unit): usually before anything is saved (then --resume must refuse clearly and a
//     fresh start follows), sometimes just after;
//  2. `progress_kills` times: at a delay uniform in [0, 0.4 x the straight run's shortest unit)
//     after the run saved one more unit than it had (while at least one more unit is left after
//     that one), so that the kill lands before the run can end even on a less loaded machine.
// Each start is `--resume` when the state file is there. Returns the log of the last run.
std::string kill_and_resume(const Chain& c, const Straight& straight, int total_units, int progress_kills,
                            std::mt19937_64& rng) {
  int kills = 0, resumed_starts = 0, attempt = 0;
  std::ostringstream story;
  const auto start = [&] {
    const bool resume = fs::exists(c.state);
    if (!resume && fs::exists(c.out)) {
      const auto refused = test::run_command(c.command(true));
      INFO(story.str());
      CHECK(refused.exit_code == 1);
      AE_CHECK_CONTAINS(refused.err, "--resume: no training state at '" + c.state + "'");
      story << "  (no state: --resume refused, fresh start)\n";
    }
    resumed_starts += resume;
    const std::string log = root() + "/" + c.name + "_run" + std::to_string(attempt++) + ".log";
    return std::make_pair(c.command(resume) + " > " + sh_quote(log) + " 2>&1", log);
  };
  const auto after_kill = [&](int status, const std::string& log, const std::string& what) {
    story << what << ": " << describe(status) << "; " << c.progress(c.out) << " of " << total_units << " saved\n";
    INFO(story.str());
    INFO(test::read_file_if_present(log));
    // Really killed (a run that finished first would not test a crash).
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    ++kills;
    const int temporaries = check_every_file_whole(c.out, what);
    if (temporaries > 0) story << "  (" << temporaries << " hidden temporary file(s) of an interrupted write left)\n";
  };
  {
    const int delay_ms = std::uniform_int_distribution<int>(0, static_cast<int>(0.5 * straight.first_unit_ms))(rng);
    const auto [command, log] = start();
    const int status = test::signal_when(command, [] { return true; }, delay_ms, SIGKILL);
    after_kill(status, log, c.name + " kill 1, " + std::to_string(delay_ms) + " ms after the start");
  }
  for (int i = 0; i < progress_kills; ++i) {
    const int before = std::max(0, c.progress(c.out));
    if (before + 2 > total_units) break;  // no unit left after the next one
    const int delay_ms = std::uniform_int_distribution<int>(0, static_cast<int>(0.4 * straight.shortest_unit_ms))(rng);
    const auto [command, log] = start();
    const int status = test::signal_when(command, [&] { return c.progress(c.out) > before; }, delay_ms, SIGKILL);
    after_kill(status, log,
               c.name + " kill " + std::to_string(i + 2) + ", " + std::to_string(delay_ms) + " ms after unit " +
                   std::to_string(before + 1) + " was saved");
  }
  // The last start runs to the end.
  if (c.before_last && fs::exists(c.state)) c.before_last();
  const auto [command, log] = start();
  const bool resume = fs::exists(c.state);
  const int status = std::system(command.c_str());
  const std::string printed = test::read_file(log);
  INFO(story.str());
  INFO(printed);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(resume);  // the saved progress was there...
  AE_CHECK_CONTAINS(printed, c.resumed_line);  // ...and was continued from, not started over
  CHECK(kills >= 2);
  MESSAGE(c.name << ": " << kills << " SIGKILLs, " << resumed_starts << " resumed starts\n" << story.str());
  return printed;
}

int csv_data_rows(const std::string& path) {
  const std::string text = test::read_file_if_present(path);
  if (text.empty()) return 0;
  return static_cast<int>(std::count(text.begin(), text.end(), '\n')) - 1;
}

// metrics.csv without the timing columns (images_per_s, seconds), which differ between runs.
std::string loss_columns(const std::string& out) {
  std::ostringstream os;
  for (const auto& row : test::read_csv_rows(out + "/metrics.csv"))
    os << row.at("epoch") << "," << row.at("lr") << "," << row.at("train_loss") << "," << row.at("val_mse") << ","
       << row.at("val_spearman") << "," << row.at("val_pearson") << "," << row.at("skipped_images") << "\n";
  return os.str();
}

constexpr int kTrainEpochs = 4;

std::string train_cmd(const std::string& out, bool resume) {
  const auto& d = dataset();
  return test::aesthete_binary() + " train --train-csv " + d.train_csv + " --images " + d.images_dir + " --out " +
         out + " --size 32 --resize-to 36 --batch 12 --epochs " + std::to_string(kTrainEpochs) +
         " --device cpu --workers 2 --seed 1" + (resume ? " --resume" : "");
}

int train_progress(const std::string& out) { return csv_data_rows(out + "/metrics.csv"); }

const Straight& straight_train() {
  static const Straight s = run_straight(train_cmd(root() + "/train_straight", false), root() + "/train_straight",
                                         train_progress, kTrainEpochs);
  return s;
}

const std::string kUsers = "--users bright,dark";
constexpr int kPersonaliseRuns = 4;  // per person: one repeat and the fit on all ratings

// Finished runs: rows of results.csv plus user files written by the fits.
int personalise_progress(const std::string& out) {
  int users = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out + "/users", ec))
    users += e.path().extension() == ".safetensors" && e.path().filename().string()[0] != '.';
  return csv_data_rows(out + "/results.csv") + users;
}

std::string personalise_cmd(const std::string& out, bool resume, int epochs = 4) {
  const auto& d = dataset();
  return test::aesthete_binary() + " personalise --model " + straight_train().out + "/model.safetensors --ratings " +
         d.workers_csv + " --images " + d.images_dir + " --out " + out + " " + kUsers +
         " --k 20 --mode adapters --repeats 1 --epochs " + std::to_string(epochs) +
         " --fit-all --size 32 --device cpu --workers 2 --checkpoint-every 0" +
         (resume ? " --resume" : "");
}

}  // namespace

TEST_CASE("train killed (SIGKILL) at random moments, resumed each time, ends with the straight run's losses and model") {
  std::mt19937_64 rng(crash_seed());
  const Straight& s = straight_train();
  Chain c;
  c.name = "train";
  c.out = root() + "/train_killed";
  c.state = c.out + "/last.safetensors";
  c.command = [&](bool resume) { return train_cmd(c.out, resume); };
  c.progress = train_progress;
  c.resumed_line = "resuming at epoch ";
  const std::string printed = kill_and_resume(c, s, kTrainEpochs, 2, rng);
  CHECK(printed.find("resuming at epoch 1,") == std::string::npos);  // continued from a saved epoch
  CHECK(loss_columns(c.out) == loss_columns(s.out));
  CHECK(test::read_file(c.out + "/model.safetensors") == test::read_file(s.out + "/model.safetensors"));
  check_every_file_whole(c.out, "the run finished");
}

TEST_CASE("a multi-user personalise --fit-all killed at random moments ends with the straight run's results and user files") {
  std::mt19937_64 rng(crash_seed() + 1);
  const std::string straight = root() + "/personalise_straight";
  const Straight st = run_straight(personalise_cmd(straight, false), straight, personalise_progress, kPersonaliseRuns);
  REQUIRE(csv_data_rows(straight + "/results.csv") == 2);  // one row per (person, repeat)

  Chain c;
  c.name = "personalise";
  c.out = root() + "/personalise_killed";
  c.state = c.out + "/state.safetensors";
  c.command = [&](bool resume) { return personalise_cmd(c.out, resume); };
  c.progress = personalise_progress;
  c.resumed_line = "resuming: ";
  c.before_last = [&] {  // another setting on resume is refused, naming it
    const auto changed = test::run_command(personalise_cmd(c.out, true, 5));
    CHECK(changed.exit_code == 1);
    AE_CHECK_CONTAINS(changed.err, "epochs: saved '4', now '5'");
  };
  kill_and_resume(c, st, kPersonaliseRuns, 2, rng);
  CHECK(test::read_file(c.out + "/results.csv") == test::read_file(straight + "/results.csv"));
  for (const std::string u : {"bright", "dark"}) {
    CAPTURE(u);
    const std::string f = "/users/" + u + ".safetensors";
    CHECK(test::read_file(c.out + f) == test::read_file(straight + f));
  }
  CHECK(test::read_file(c.out + "/draws.csv") == test::read_file(straight + "/draws.csv"));
  check_every_file_whole(c.out, "the run finished");

  // The same without randomness: stopped (as by Ctrl-C) inside the first person's fit on all
  // ratings, after some of its epochs were saved, then resumed: the same user files.
  const std::string stopped = root() + "/personalise_stopped";
  auto s = test::run_command(personalise_cmd(stopped, false) + " --stop-after-steps 7");
  INFO(s.err);
  REQUIRE(s.exit_code == 0);
  s = test::run_command(personalise_cmd(stopped, true));
  INFO(s.err);
  REQUIRE(s.exit_code == 0);
  AE_CHECK_CONTAINS(s.err, "resuming user bright, fit at epoch 3");  // two of its four epochs were saved
  CHECK(test::read_file(stopped + "/results.csv") == test::read_file(straight + "/results.csv"));
  for (const std::string u : {"bright", "dark"}) {
    CAPTURE(u);
    const std::string f = "/users/" + u + ".safetensors";
    CHECK(test::read_file(stopped + f) == test::read_file(straight + f));
  }
}

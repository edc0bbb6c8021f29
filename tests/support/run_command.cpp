#include "tests/support/run_command.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support/check.h"

namespace ae::test {

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

CommandResult run_command(const std::string& command) {
  static int counter = 0;
  const std::string base = build_dir() + "/cmd_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  const std::string full = command + " > " + base + ".out 2> " + base + ".err";
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(base + ".out");
  r.err = slurp(base + ".err");
  std::filesystem::remove(base + ".out");
  std::filesystem::remove(base + ".err");
  return r;
}

CommandResult run_argv(const std::vector<std::string>& argv) {
  static int counter = 0;
  const std::string base = build_dir() + "/argv_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  const std::string out = base + ".out", err = base + ".err";
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  CommandResult r;
  const pid_t pid = fork();
  if (pid < 0) return r;
  if (pid == 0) {
    // dup2, not freopen: freopen would flush the parent's unwritten stdout buffer a second time.
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(126);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

std::string aesthete_binary() { return build_dir() + "/aesthete"; }

int signal_when(const std::string& command, const std::function<bool()>& ready, int delay_ms, int signal) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  // Sleeps until `until`, returning true when the command ended meanwhile (status is then set).
  const auto ended_before = [&](std::chrono::steady_clock::time_point until, const std::function<bool()>& stop) {
    while (std::chrono::steady_clock::now() < until && !(stop && stop())) {
      if (waitpid(pid, &status, WNOHANG) == pid) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return waitpid(pid, &status, WNOHANG) == pid;
  };
  if (ended_before(std::chrono::steady_clock::now() + std::chrono::minutes(3), ready)) return status;
  if (ended_before(std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms), nullptr)) return status;
  kill(pid, signal);
  waitpid(pid, &status, 0);
  return status;
}

int signal_when_file_appears(const std::string& command, const std::string& file, int signal, int delay_ms) {
  return signal_when(command, [&] { return std::filesystem::exists(file); }, delay_ms, signal);
}

}  // namespace ae::test

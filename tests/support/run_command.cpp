#include "tests/support/run_command.h"

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

std::string aesthete_binary() { return build_dir() + "/aesthete"; }

int signal_when_file_appears(const std::string& command, const std::string& file, int signal, int delay_ms) {
  namespace fs = std::filesystem;
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (!fs::exists(file) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  kill(pid, signal);
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

}  // namespace ae::test

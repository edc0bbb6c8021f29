#include "tests/support/run_command.h"

#include <sys/wait.h>

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

}  // namespace ae::test

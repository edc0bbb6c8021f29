#pragma once
// Runs a command line through the shell for end-to-end tests of the `aesthete` binary.
#include <string>

namespace ae::test {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `command` with /bin/sh, capturing stdout and stderr separately.
CommandResult run_command(const std::string& command);

// Path of the built `aesthete` binary.
std::string aesthete_binary();

}  // namespace ae::test

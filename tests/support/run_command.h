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

// Starts `command` (through /bin/sh), waits until `file` exists (at most 3 minutes), waits
// `delay_ms` more, sends `signal` and returns the wait status. Tests of what a kill or Ctrl-C at a
// given point leaves behind.
int signal_when_file_appears(const std::string& command, const std::string& file, int signal, int delay_ms = 0);

// Path of the built `aesthete` binary.
std::string aesthete_binary();

}  // namespace ae::test

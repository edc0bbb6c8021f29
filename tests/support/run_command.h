#pragma once
// Runs a command line through the shell for end-to-end tests of the `aesthete` binary.
#include <functional>
#include <string>
#include <vector>

namespace ae::test {

struct CommandResult {
  int exit_code = -1;    // -1 when the process did not exit (see term_signal)
  int term_signal = 0;   // run_argv only: the signal that ended the process, 0 when it exited
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `command` with /bin/sh, capturing stdout and stderr separately.
CommandResult run_command(const std::string& command);

// Runs argv[0] with the arguments argv[1..] directly (no shell: no quoting, and a signal that ends
// the process is seen as such instead of as the shell's exit status 128+N), capturing stdout and
// stderr separately.
CommandResult run_argv(const std::vector<std::string>& argv);

// Starts `command` (through /bin/sh), waits until `file` exists (at most 3 minutes), waits
// `delay_ms` more, sends `signal` and returns the wait status. Tests of what a kill or Ctrl-C at a
// given point leaves behind.
int signal_when_file_appears(const std::string& command, const std::string& file, int signal, int delay_ms = 0);

// Starts `command` (through /bin/sh), polls `ready` every 10 ms until it returns true (at most 3
// minutes), waits `delay_ms` more and sends `signal`; returns the wait status. A command that ends
// on its own before the signal is not signalled: its status (WIFEXITED) comes back as soon as it
// ends. With ready = [] { return true; } this is "start, sleep delay_ms, kill".
int signal_when(const std::string& command, const std::function<bool()>& ready, int delay_ms, int signal);

// Path of the built `aesthete` binary.
std::string aesthete_binary();

}  // namespace ae::test

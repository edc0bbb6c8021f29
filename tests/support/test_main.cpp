// doctest main shared by every test binary. A binary whose checks could not run at all
// (no GPU, no ../shared data) calls ae::test::skip_binary(); it then exits 77 so CTest
// reports it as skipped, never as passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "tests/support/check.h"

namespace {
bool g_skipped = false;
std::string g_skip_reason;
}  // namespace

namespace ae::test {
void skip_binary(const std::string& why) {
  g_skipped = true;
  g_skip_reason = why;
}
}  // namespace ae::test

int main(int argc, char** argv) {
  doctest::Context context;
  context.applyCommandLine(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  if (rc != 0) return rc;
  if (g_skipped) {
    std::printf("SKIPPED: %s\n", g_skip_reason.c_str());
    return 77;
  }
  return 0;
}

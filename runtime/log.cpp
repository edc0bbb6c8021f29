#include "runtime/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace ae {
namespace {
LogLevel initial_level() {
  const char* env = std::getenv("AE_LOG");
  if (!env) return LogLevel::info;
  if (!std::strcmp(env, "debug")) return LogLevel::debug;
  if (!std::strcmp(env, "warn")) return LogLevel::warn;
  if (!std::strcmp(env, "error")) return LogLevel::error;
  if (!std::strcmp(env, "quiet")) return LogLevel::quiet;
  return LogLevel::info;
}
std::atomic<LogLevel> g_level{initial_level()};
std::mutex g_mutex;
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_line(LogLevel level, const std::string& message) {
  static const char* const prefix[] = {"debug: ", "", "warning: ", "error: ", ""};
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "%s%s\n", prefix[static_cast<int>(level)], message.c_str());
}

}  // namespace ae

#pragma once
// Minimal levelled logging to stderr. Stdout is reserved for command results (CSV, tables).
#include <sstream>
#include <string>

namespace ae {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& message);

}  // namespace ae

#define AE_LOG(level, msg)                                                  \
  do {                                                                      \
    if (static_cast<int>(level) >= static_cast<int>(::ae::log_level())) {   \
      std::ostringstream ae_log_os_;                                        \
      ae_log_os_ << msg;                                                    \
      ::ae::log_line(level, ae_log_os_.str());                              \
    }                                                                       \
  } while (0)
#define AE_INFO(msg) AE_LOG(::ae::LogLevel::info, msg)
#define AE_WARN(msg) AE_LOG(::ae::LogLevel::warn, msg)
#define AE_DEBUG(msg) AE_LOG(::ae::LogLevel::debug, msg)

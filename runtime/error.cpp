#include "runtime/error.h"

#include <cstdlib>

namespace ae {

// User-facing errors read "what went wrong"; set AE_DEBUG_ERRORS=1 to append the
// source location, which is for developers.
[[noreturn]] void throw_error(const char* file, int line, const std::string& message) {
  static const bool with_location = std::getenv("AE_DEBUG_ERRORS") != nullptr;
  if (with_location) {
    std::ostringstream os;
    os << message << " [" << file << ":" << line << "]";
    throw Error(os.str());
  }
  throw Error(message);
}

}  // namespace ae

#pragma once
// The one error type of aesthete. Every failure carries what went wrong and where
// (op, shapes, device, file) so a user never has to guess. Never use assert() for
// input validation: it disappears under NDEBUG.
#include <sstream>
#include <stdexcept>
#include <string>

namespace ae {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace ae

// AE_CHECK(cond, "conv2d: x " << x.desc() << " and w " << w.desc() << " disagree on channels");
// The message is a stream expression, evaluated only on failure.
#define AE_CHECK(cond, msg)                                            \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::ostringstream ae_check_os_;                                 \
      ae_check_os_ << msg;                                             \
      ::ae::throw_error(__FILE__, __LINE__, ae_check_os_.str());       \
    }                                                                  \
  } while (0)

#define AE_FAIL(msg)                                                   \
  do {                                                                 \
    std::ostringstream ae_check_os_;                                   \
    ae_check_os_ << msg;                                               \
    ::ae::throw_error(__FILE__, __LINE__, ae_check_os_.str());         \
  } while (0)

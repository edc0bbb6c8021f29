#pragma once
// The one error type of aesthete. Every failure carries what went wrong and where
// (op, shapes, device, file) so a user never has to guess. Never use assert() for
// input validation: it disappears under NDEBUG.
#include <sstream>
#include <stdexcept>
#include <string>

namespace ae {

// What kind of failure an Error is, for front ends that map errors onto their own types (the
// Python module raises ValueError subclasses for `invalid`, OSError subclasses for `file` and
// KeyboardInterrupt for `interrupted`; the command line prints the message either way).
//   invalid      a bad argument, option or combination (the default)
//   file         a file could not be read or written, or its contents are not what it must be;
//                the functions that take a path say so by throwing this kind (rethrow_as_file_error)
//   interrupted  a stop request ended the call (runtime/stop.h)
enum class ErrorKind { invalid, file, interrupted };

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, ErrorKind kind = ErrorKind::invalid)
      : std::runtime_error(what), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

// Runs `body` and returns what it returns; an `invalid` ae::Error it throws comes out as a `file`
// error with the same message (for functions that read or write one named file: whatever goes wrong
// in them is about that file). Other kinds and other exceptions pass unchanged.
template <class F>
auto rethrow_as_file_error(F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::invalid) throw;
    throw Error(e.what(), ErrorKind::file);
  }
}

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

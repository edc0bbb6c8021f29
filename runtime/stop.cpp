#include "runtime/stop.h"

#include "runtime/error.h"

namespace ae {

void throw_if_stopped(const StopFlag* flag, const char* what) {
  if (stop_requested(flag)) throw Error(std::string(what) + ": stopped on request", ErrorKind::interrupted);
}

}  // namespace ae

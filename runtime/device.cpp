#include "runtime/device.h"

#include <cstdlib>

#include "runtime/error.h"

namespace ae {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string num = text.substr(5);
    char* end = nullptr;
    const long i = std::strtol(num.c_str(), &end, 10);
    AE_CHECK(!num.empty() && end && *end == '\0' && i >= 0 && i < 1024,
             "bad device '" << text << "': expected cpu, cuda or cuda:N");
    return Device::cuda(static_cast<int>(i));
  }
  AE_FAIL("bad device '" << text << "': expected cpu, cuda or cuda:N");
}

}  // namespace ae

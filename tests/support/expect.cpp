#include "tests/support/expect.h"

#include <cstring>

#include "runtime/error.h"

namespace ae::test {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ae::Error& e) {
    return e.what();
  }
  FAIL_CHECK("expected an ae::Error");
  return "<no ae::Error thrown>";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void require_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const ae::Error& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    for (const std::string& part : parts) CHECK_MESSAGE(contains(message, part), "expected to contain: " << part);
    return;
  }
  FAIL("expected an ae::Error");
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  if (a.nbytes() == 0) return true;
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());  // shares when already on the host
  return std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

}  // namespace ae::test

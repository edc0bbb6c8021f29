#include "tests/support/expect.h"

#include <cmath>
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

std::vector<float> exact_copy(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  const float* p = h.f32();
  return std::vector<float>(p, p + h.numel());
}

namespace {
constexpr float kSentinel = 12345.0f;
}

RedZoned::RedZoned(int64_t n) : n_(n), buf_(static_cast<std::size_t>(n + 2 * kGuard), std::nanf("")) {
  for (int64_t i = 0; i < kGuard; ++i)
    buf_[static_cast<std::size_t>(i)] = buf_[static_cast<std::size_t>(n + kGuard + i)] = kSentinel;
}

int64_t RedZoned::guard_damage() const {
  int64_t bad = 0;
  for (int64_t i = 0; i < kGuard; ++i)
    bad += (buf_[static_cast<std::size_t>(i)] != kSentinel) +
           (buf_[static_cast<std::size_t>(n_ + kGuard + i)] != kSentinel);
  return bad;
}

int64_t RedZoned::unwritten() const {
  int64_t nan = 0;
  for (int64_t i = 0; i < n_; ++i) nan += std::isnan(data()[i]);
  return nan;
}

bool RedZoned::same_bits(const Tensor& t) const {
  if (!t.defined() || t.dtype() != DType::f32 || t.numel() != n_) return false;
  const Tensor h = t.to(Device::cpu());
  return std::memcmp(data(), h.f32(), sizeof(float) * static_cast<std::size_t>(n_)) == 0;
}

}  // namespace ae::test

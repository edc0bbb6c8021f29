#pragma once
// Assertions about errors and exact equality, shared by the test files: the message of the
// ae::Error a call throws, "it throws and the message names these things", bit-for-bit tensors.
#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ae::test {

// The message of the ae::Error that f throws. When f throws none: a failed (non-fatal) check
// and "<no ae::Error thrown>".
std::string error_of(const std::function<void()>& f);

bool contains(const std::string& text, const std::string& part);

// Requires f to throw an ae::Error (fatal failure otherwise) and checks that its message contains
// every one of `parts`; a failure shows the whole message and the missing part.
void require_error(const std::function<void()>& f, const std::vector<std::string>& parts);

// Both defined, same shape, same dtype and the same bytes (NaN payloads and -0 included). The
// tensors may live on any device (device tensors are copied to the host to compare). The one
// bitwise comparison of the test files; tolerance comparisons: test::require_close (check.h).
bool bitwise_equal(const Tensor& a, const Tensor& b);

// For calling a CPU kernel on raw pointers (tests/unit/test_conv, test_winograd): host_alloc rounds
// a tensor's block up to 64 bytes (or 1/8 of its size), so AddressSanitizer does not see a read a
// few floats past a tensor's end. exact_copy gives the elements in a heap block of exactly their
// size, whose end is AddressSanitizer's red zone.
std::vector<float> exact_copy(const Tensor& t);

// A kernel's output of n floats, pre-filled with NaN, between red zones of kGuard floats of a
// sentinel on each side (also in a build without AddressSanitizer: a write past either end, or an
// element never written, shows).
class RedZoned {
 public:
  static constexpr int64_t kGuard = 64;
  explicit RedZoned(int64_t n);
  float* data() { return buf_.data() + kGuard; }
  const float* data() const { return buf_.data() + kGuard; }
  int64_t guard_damage() const;  // sentinels overwritten, both sides
  int64_t unwritten() const;     // NaNs left in the n floats
  bool same_bits(const Tensor& t) const;  // the n floats equal t's bytes (t f32 with n elements)

 private:
  int64_t n_;
  std::vector<float> buf_;
};

}  // namespace ae::test

// CHECK that `text` contains `part`, showing both when it does not (the failure points at the
// caller's line, which a helper function could not).
#define AE_CHECK_CONTAINS(text, part) \
  CHECK_MESSAGE(::ae::test::contains(text, part), "message: " << (text) << "\nexpected to contain: " << (part))

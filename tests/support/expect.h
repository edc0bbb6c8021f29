#pragma once
// Assertions about errors and exact equality, shared by the test files: the message of the
// ae::Error a call throws, "it throws and the message names these things", bit-for-bit tensors.
#include <doctest/doctest.h>

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

}  // namespace ae::test

// CHECK that `text` contains `part`, showing both when it does not (the failure points at the
// caller's line, which a helper function could not).
#define AE_CHECK_CONTAINS(text, part) \
  CHECK_MESSAGE(::ae::test::contains(text, part), "message: " << (text) << "\nexpected to contain: " << (part))

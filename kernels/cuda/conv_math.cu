// The process-wide convolution math mode (conv_math.h). Host code only.
#include "kernels/cuda/conv_math.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "runtime/error.h"

namespace ae::cuda {
namespace {

// -1: not chosen yet (read AE_CONV_MATH on first use), else a ConvMath value.
std::atomic<int> g_math{-1};
std::mutex g_first_use;

}  // namespace

ConvMath parse_conv_math(std::string_view text, std::string_view where) {
  if (text == "f32") return ConvMath::f32;
  if (text == "tf32") return ConvMath::tf32;
  if (text == "bf16") return ConvMath::bf16;
  AE_FAIL(std::string(where) << ": unknown convolution math '" << std::string(text)
                             << "' (expected f32, tf32 or bf16)");
}

const char* conv_math_name(ConvMath math) {
  switch (math) {
    case ConvMath::f32: return "f32";
    case ConvMath::tf32: return "tf32";
    case ConvMath::bf16: return "bf16";
  }
  return "?";
}

ConvMath conv_math_from_environment() {
  const char* env = std::getenv("AE_CONV_MATH");
  return env != nullptr && *env != '\0' ? parse_conv_math(env, "AE_CONV_MATH") : ConvMath::f32;
}

ConvMath conv_math() {
  int m = g_math.load(std::memory_order_acquire);
  if (m >= 0) return static_cast<ConvMath>(m);
  const std::lock_guard<std::mutex> lock(g_first_use);
  m = g_math.load(std::memory_order_acquire);
  if (m >= 0) return static_cast<ConvMath>(m);
  const ConvMath chosen = conv_math_from_environment();  // a bad value throws every time: nothing is stored
  // A set_conv_math that raced with this first use wins over the environment.
  int expected = -1;
  if (!g_math.compare_exchange_strong(expected, static_cast<int>(chosen), std::memory_order_acq_rel)) {
    return static_cast<ConvMath>(expected);
  }
  return chosen;
}

void set_conv_math(ConvMath math) { g_math.store(static_cast<int>(math), std::memory_order_release); }

}  // namespace ae::cuda

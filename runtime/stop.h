#pragma once
// Stop requests (DESIGN.md "Front ends"): how a front end asks a long engine call to end early.
//
// A StopFlag is explicit state owned by whoever may want to stop a call: the command line owns one
// for the process and sets it from its SIGINT/SIGTERM handler (request() is async-signal-safe); the
// Python module makes one per call and sets it when Python reports a KeyboardInterrupt. The
// engine's long loops are handed a `const StopFlag*` in their options (nullptr: never asked to
// stop) and check it at their safe points:
//   - training and personalisation after every step: they finish the step, save their state and
//     return `interrupted` (a resumed run continues exactly);
//   - enhancement between ascent steps and saliency between SmoothGrad batches: they throw
//     ae::Error of kind `interrupted` (nothing half-done is returned).
#include <atomic>

namespace ae {

class StopFlag {
 public:
  void request() noexcept { flag_.store(true, std::memory_order_relaxed); }
  bool requested() const noexcept { return flag_.load(std::memory_order_relaxed); }
  void clear() noexcept { flag_.store(false, std::memory_order_relaxed); }

 private:
  static_assert(std::atomic<bool>::is_always_lock_free, "a signal handler sets the flag");
  std::atomic<bool> flag_{false};
};

// True when `flag` is given and set.
inline bool stop_requested(const StopFlag* flag) { return flag != nullptr && flag->requested(); }

// Throws ae::Error of kind `interrupted` saying that `what` stopped on request (enhancement and
// saliency call it at their safe points).
void throw_if_stopped(const StopFlag* flag, const char* what);

}  // namespace ae

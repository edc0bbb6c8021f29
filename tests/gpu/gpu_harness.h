#pragma once
// What every GPU test needs: the device this binary was built for (the emulated device, or a
// real GPU for the gpu-real/ variants), checked device memory (red zones around every allocation,
// outputs poisoned with NaN before kernels run) and a clean skip when there is no device.
//
//   TEST_CASE("...") {
//     AE_GPU_TEST_PRELUDE();   // returns early (binary reported Skipped) without a device
//     ...
//     ae::gputest::require_guards_intact();
//   }
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ae::gputest {

// Brings the device up once (guard bytes on). False, and the binary marked skipped, without one.
bool device_ready();
bool emulated();
Device device();
// REQUIRE that no device allocation was written outside its bounds since the last check.
void require_guards_intact();
// Host tensor -> device tensor.
Tensor to_device(const Tensor& host);

}  // namespace ae::gputest

#define AE_GPU_TEST_PRELUDE()                 \
  do {                                        \
    if (!::ae::gputest::device_ready()) return; \
  } while (0)

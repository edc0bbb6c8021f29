// One libFuzzer binary per target: compiled with -DAE_FUZZ_TARGET="<name>" (tests/fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ae::fuzz::initialize();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const ae::fuzz::Target& target = ae::fuzz::target(AE_FUZZ_TARGET);
  target.run(data, size);
  return 0;
}

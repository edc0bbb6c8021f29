#pragma once
// Fuzz targets: one entry point per kind of untrusted input, shared by the libFuzzer binaries
// (tests/fuzz/fuzz_main.cpp, built when the compiler supports -fsanitize=fuzzer) and by the unit
// test that replays every kept input (tests/unit/test_fuzz_regressions.cpp, always built).
//
// A target feeds its bytes to the same library call the program makes on a file of that kind. An
// ae::Error is the right answer to bad input and is swallowed; anything else (another exception, a
// crash, a sanitizer report, a hang, an allocation above libFuzzer's limit) is a finding. When an
// input is accepted, the target checks what came out (sizes agree, values in range) and aborts
// with a message when it does not.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ae::fuzz {

struct Target {
  const char* name;  // also the folder of its kept inputs: tests/regressions/<name>/
  const char* what;
  void (*run)(const uint8_t* data, std::size_t size);
};

// pth, safetensors, user_file, labels, jpeg, png, exif, recipe.
const std::vector<Target>& targets();
// The target called `name`; aborts with the list of names when there is none.
const Target& target(const std::string& name);

// Process set-up for fuzzing and replay: a small pixel limit (img::set_max_pixels(kFuzzMaxPixels),
// so that a decoder's largest legitimate allocation stays far below libFuzzer's 2 GB malloc limit)
// and warnings only in the log.
inline constexpr int64_t kFuzzMaxPixels = int64_t{1} << 22;
void initialize();

}  // namespace ae::fuzz

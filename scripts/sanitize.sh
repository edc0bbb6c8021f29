#!/usr/bin/env bash
# sanitize.sh [BUILD] — `make sanitize`: an AddressSanitizer + UndefinedBehaviorSanitizer build
# (clang, -O1) of the library, of the tests listed below and of the libFuzzer targets
# (tests/fuzz), then runs those tests and fuzzes every target for AE_FUZZ_SECONDS (default 20) s,
# two at a time. Any sanitizer report fails the run (-fno-sanitize-recover=all, halt_on_error).
#
# What runs (CI's 30-minute budget on 2 cores allows about 9 minutes for all of this; README "Bad input"):
#   unit  UNIT_INCLUDED: the tests of what reads files or other untrusted input (.pth, safetensors,
#         photos, labels, atomic writes, the fuzz regressions) and the runtime; user files are
#         covered by fuzz/user_file and the regressions (unit/test_user_file takes 82 s under ASan);
#         the hand-vectorised CPU convolutions (kernels/cpu/conv_direct*, winograd*): unit/test_conv
#         and unit/test_winograd force each direct form and each Winograd tile for every vector ISA
#         the machine runs (AVX2 and AVX-512, Winograd also plain), check via the path counters that
#         it ran, and also call the kernels on exact-size inputs with outputs between red zones
#         (3 s and 1 s under ASan on 2 idle cores, 7 s and 3 s on busy ones, 2026-11-30)
#   gpu   GPU_INCLUDED: the fiber scheduler of the emulated device (kernels/emu/scheduler.cpp, with
#         ASan's fiber-switch annotations) and three small kernel families on it
#   fuzz  every target of tests/fuzz/targets.h for AE_FUZZ_SECONDS each, two at a time
# Not run under the sanitizers (make test runs them unsanitized): the other unit tests (the other
# op numerics, the model, the CLI, which would need the binary built again with ASan), the other
# gpu tests (kernel sweeps of minutes under ASan), parity and slow.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-sanitize}
jobs=${JOBS:-$(nproc)}
fuzz_seconds=${AE_FUZZ_SECONDS:-20}

UNIT_INCLUDED=(test_runtime test_thread_pool test_atomic_file test_write_failures test_safetensors test_pth_reader
               test_pth_torch_fixtures test_image_io test_image_photos test_labels test_flickr_labels
               test_loader test_fuzz_regressions test_conv test_winograd)
GPU_INCLUDED=(test_emulator test_cuda_pool test_cuda_image test_cuda_staging)

cxx=$(command -v clang++-14 || command -v clang++ || true)
cc=$(command -v clang-14 || command -v clang || true)
if [[ -z $cxx || -z $cc ]]; then
  echo "sanitize: clang is not installed (scripts/bootstrap.sh installs clang-14)" >&2
  exit 1
fi
echo "sanitize: configuring $build with $cxx (-fsanitize=address,undefined)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_CXX_FLAGS_RELEASE="-O1 -gline-tables-only" -DCMAKE_C_FLAGS_RELEASE="-O1 -gline-tables-only" \
  -DAE_CUDA=OFF -DAE_WERROR=OFF -DAE_SANITIZE=address,undefined -DAE_FUZZ=ON -DAE_FUZZ_SECONDS="$fuzz_seconds" \
  > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep -q "libFuzzer targets ON" "$build.configure.log" ||
  { grep "aesthete:" "$build.configure.log"; echo "sanitize: clang cannot link -fsanitize=fuzzer (libclang-rt-14-dev?)" >&2; exit 1; }

unit=("${UNIT_INCLUDED[@]}")
targets=(fuzz_seeds)
for t in "${unit[@]}"; do targets+=("unit_$t"); done
for t in "${GPU_INCLUDED[@]}"; do targets+=("gpu_$t"); done
for t in $(sed -n 's/^set(AE_FUZZ_TARGETS \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt); do targets+=("fuzz_$t"); done
echo "sanitize: building ${#targets[@]} targets"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

# Reports end the process with a non-zero status; leaks are reported at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer; fi
export AE_EMU_STACK_KB=${AE_EMU_STACK_KB:-256}  # fiber stacks: ASan's redzones make frames larger

regex="^(unit/($(IFS='|'; echo "${unit[*]}"))|gpu/($(IFS='|'; echo "${GPU_INCLUDED[*]}")))\$"
echo "sanitize: under ASan+UBSan: unit/{${UNIT_INCLUDED[*]}}, gpu/{${GPU_INCLUDED[*]}} and the fuzzers;"
echo "sanitize: not run here (make test runs them unsanitized): the other unit and gpu tests, parity, slow"
(cd "$build" && ctest --output-on-failure -j "$jobs" -R "$regex")
(cd "$build" && ctest --output-on-failure -j "$jobs" -L fuzz)

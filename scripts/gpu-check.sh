#!/usr/bin/env bash
# gpu-check.sh: the one command to run on a GPU machine. Builds for sm_90, runs every `gpu`-label
# test (the emulated-device variants gpu/* and the real-GPU variants gpu-real/*), runs the
# benchmarks that exist (bench_*), and prints one summary table last. Logs go to $OUT/gpu-check
# when OUT is set, else to <build>/gpu-check-logs. Keeps going after a failed step so the table is
# always printed; exits non-zero when any step failed. Designed to finish within ~8 minutes.
#
#   scripts/gpu-check.sh                   # build dir build-gpu next to the sources
#   AE_GPU_CHECK_BUDGET_S=300 BUILD_DIR=/tmp/b scripts/gpu-check.sh
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-$SRC/build-gpu}"
LOGS="${OUT:+$OUT/gpu-check}"
LOGS="${LOGS:-$BUILD/gpu-check-logs}"
BUDGET_S="${AE_GPU_CHECK_BUDGET_S:-470}"
JOBS="$(nproc 2>/dev/null || echo 4)"
mkdir -p "$LOGS"
START=$(date +%s)

declare -a ROWS=()
FAILED=0

remaining() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME MAX_SECONDS COMMAND...: runs COMMAND with a timeout (the smaller of MAX_SECONDS and
# the time left), logs to $LOGS/NAME.log, records a row "name|status|seconds|note".
step() {
  local name="$1" max="$2"
  shift 2
  local left
  left=$(remaining)
  local limit=$((max < left ? max : left))
  if ((limit < 5)); then
    ROWS+=("$name|SKIPPED|0|no time left in the ${BUDGET_S}s budget")
    FAILED=1
    return 1
  fi
  local t0=$(date +%s) rc=0
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  local dt=$(($(date +%s) - t0))
  if ((rc == 0)); then
    ROWS+=("$name|ok|$dt|")
  elif ((rc == 124 || rc == 137)); then
    ROWS+=("$name|TIMEOUT|$dt|after ${limit}s, see $LOGS/$name.log")
    FAILED=1
  else
    ROWS+=("$name|FAILED|$dt|exit $rc, see $LOGS/$name.log")
    FAILED=1
  fi
  return $rc
}

note() { ROWS[-1]="${ROWS[-1]}$1"; }

# ---- device
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >"$LOGS/device.log" 2>&1; then
  ROWS+=("device|ok|0|$(head -1 "$LOGS/device.log")")
  HAVE_GPU=1
else
  ROWS+=("device|NONE|0|nvidia-smi found no GPU: gpu-real tests will report Skipped")
  HAVE_GPU=0
fi

# ---- configure and build
if step configure 120 cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90; then
  step build 300 cmake --build "$BUILD" -j "$JOBS" || true
  grep -E "registers|spill" "$LOGS/build.log" >"$LOGS/ptxas.log" 2>/dev/null || true
  if [[ -s "$LOGS/ptxas.log" ]]; then
    spills=$(grep -cE "[1-9][0-9]* bytes spill (stores|loads)" "$LOGS/ptxas.log" || true)
    ROWS+=("ptxas|info|0|$(grep -c registers "$LOGS/ptxas.log") kernels, $spills with spills (ptxas.log)")
  fi
fi

# ---- GPU tests (both variants)
if [[ -f "$BUILD/CTestTestfile.cmake" ]]; then
  step ctest-gpu 240 ctest --test-dir "$BUILD" -L gpu --output-on-failure -j "$JOBS" || true
  log="$LOGS/ctest-gpu.log"
  passed=$(grep -cE "Test +#[0-9]+: .* Passed" "$log" || true)
  failed=$(grep -cE "\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run" "$log" || true)
  skipped=$(grep -cE "\*\*\*Skipped" "$log" || true)
  real_skipped=$(grep -E "gpu-real/.*\*\*\*Skipped" "$log" | grep -vc "test_emulator" || true)
  note "$passed passed, $failed failed, $skipped skipped"
  if ((HAVE_GPU == 1 && real_skipped > 0)); then
    ROWS+=("gpu-real|FAILED|0|$real_skipped real-GPU test binaries skipped although nvidia-smi sees a GPU")
    FAILED=1
  fi
  # Memory checking of one real-GPU binary, when the sanitizer exists and time allows.
  sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  exe="$(find "$BUILD" -maxdepth 2 -type f -name 'gpu_real_test_cuda_elementwise' | head -1)"
  if ((HAVE_GPU == 1)) && [[ -x "$sanitizer" && -n "$exe" ]] && (($(remaining) > 150)); then
    step memcheck 90 "$sanitizer" --tool memcheck --error-exitcode 1 "$exe" || true
  fi
fi

# ---- benchmarks that exist
for bench in "$BUILD"/bench_*; do
  [[ -x "$bench" && -f "$bench" ]] || continue
  name="$(basename "$bench")"
  step "$name" 120 "$bench" --quick || true
  [[ -f "$LOGS/$name.log" ]] && tail -n 40 "$LOGS/$name.log" >"$LOGS/$name.tail" || true
done

# ---- summary
total=$(($(date +%s) - START))
{
  echo
  echo "gpu-check summary ($total s, logs in $LOGS)"
  printf '%-28s %-9s %6s  %s\n' STEP STATUS SECONDS NOTE
  printf '%-28s %-9s %6s  %s\n' ---- ------ ------- ----
  for row in "${ROWS[@]}"; do
    IFS='|' read -r n s t d <<<"$row"
    printf '%-28s %-9s %6s  %s\n' "$n" "$s" "$t" "$d"
  done
  echo
  echo "result: $([[ $FAILED == 0 ]] && echo PASS || echo FAIL)"
} | tee "$LOGS/summary.txt"
exit "$FAILED"

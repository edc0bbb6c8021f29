#!/usr/bin/env bash
# gpu-check.sh: the one command to run on a GPU machine (about 8 minutes on an H200). In order:
#   1. configure and build for sm_90 only (Release, -j16): aesthete, bench_cuda_conv and every
#      real-GPU test (gpu_real_tests: every tests/gpu file, one CTest test each); the emulated-device tests are CI's job and are not built
#   2. ctest -L gpu on the real device (the gpu-real/* tests; a skip there is a failure here)
#   2b. the 1-rank NCCL smoke test (gpu_real_tests, test_nccl_smoke.cpp's cases: libnccl loads, a 1-rank communicator
#      all-reduces on its own stream, the training loop's NCCL gradient sum) with its log kept
#   3. the cuDNN oracle (gpu_real_tests, test_cudnn_oracle.cpp's cases) once more with its per-layer "% of
#      tolerance" lines kept in cudnn-oracle.log
#   4. bench_cuda_conv --batch 128: our conv forward/backward-data/backward-weight vs cuDNN per
#      ResNet-18 layer (f32, TF32 off)
#   4b. the same with --math bf16 (ours: BF16 x and w in the forward, f32 tensors in the backward, BF16
#      operands on tensor cores; cuDNN: BF16 tensors, tensor-op math): issue 15's rows, >= 0.15 s of
#      runs an entry, at most 90 s
#   5. bench/compare.sh --device cuda --batch 128: training step and inference, aesthete vs PyTorch
#   5b. the same with --precision bf16 (issue 15: training step >= 1.3x PyTorch eager channels_last
#      in BF16; ours also stores its activations in BF16, as autocast does), if >= 160 s are left
#   6. compute-sanitizer memcheck of one real-GPU test binary, if time is left
#   6b. bench_cuda_conv --math tf32 (cuDNN: f32 tensors, TF32 allowed), if >= 100 s are left
#   6c. aesthete bench --what enhance at batch 1, 512 px: the input-gradient pass of enhancement and
#      saliency eager and as CUDA graph replays, if >= 45 s are left
# and prints ONE summary table last (scripts/gpu_check_summary.py). Logs and the table go to
# $OUT/gpu-check when OUT is set, else to <build>/gpu-check-logs. Keeps going after a failed step;
# exits non-zero when anything failed, timed out or is missing from the table.
#
#   scripts/gpu-check.sh                  # build dir build-gpu next to the sources
#   scripts/gpu-check.sh --dry-run        # no GPU needed: prints the commands it would run and
#                                         # builds the table from fake logs (tests the table code)
#   BUILD_DIR=/tmp/b PYTHON=python3 AE_GPU_CHECK_BUDGET_S=470 scripts/gpu-check.sh
# PYTHON: the interpreter whose PyTorch has CUDA (default python3; Debian's /usr/bin/python3 is a
# CPU-only PyTorch on the dev machine). It also runs the summary (standard library only).
set -uo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD_DIR:-$SRC/build-gpu}"
LOGS="${OUT:+$OUT/gpu-check}"
LOGS="${LOGS:-$BUILD/gpu-check-logs}"
BUDGET_S="${AE_GPU_CHECK_BUDGET_S:-470}"
JOBS="${AE_GPU_CHECK_JOBS:-16}"
BATCH="${AE_GPU_CHECK_BATCH:-128}"
PYTHON="${PYTHON:-python3}"
export AE_CONV_MATH=f32  # every row is float32 on CUDA cores (kernels/cuda/conv_math.h reads this),
                        # but bench_cuda_conv --math bf16/tf32, which sets its own mode
export PYTHON  # bench/compare.sh runs the PyTorch peer with it
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS/steps.txt" "$LOGS/summary.txt"
START=$(date +%s)
FAILED=0

remaining() { echo $((BUDGET_S - ($(date +%s) - START))); }

# row NAME STATUS SECONDS NOTE: one line of steps.txt, the step list of the summary table.
row() { printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >>"$LOGS/steps.txt"; }

# step NAME MAX_SECONDS COMMAND...: runs COMMAND under a timeout (the smaller of MAX_SECONDS and the
# budget left), output to $LOGS/NAME.log, and records its row. Returns the command's status.
step() {
  local name="$1" max="$2"
  shift 2
  local left limit t0 dt rc=0
  left=$(remaining)
  limit=$((max < left ? max : left))
  if ((DRY_RUN == 1)); then
    printf 'would run (limit %ss): %s\n' "$max" "$*" | tee -a "$LOGS/dry-run-commands.txt"
    row "$name" ok 0 "dry run"
    return 0
  fi
  if ((limit < 5)); then
    row "$name" SKIPPED 0 "no time left in the ${BUDGET_S}s budget"
    FAILED=1
    return 1
  fi
  echo "== $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  dt=$(($(date +%s) - t0))
  if ((rc == 0)); then
    row "$name" ok "$dt" ""
  elif ((rc == 124 || rc == 137)); then
    row "$name" TIMEOUT "$dt" "after ${limit}s, see $name.log"
    FAILED=1
  else
    row "$name" FAILED "$dt" "exit $rc, see $name.log"
    FAILED=1
  fi
  return $rc
}

# ---- 0. device
if ((DRY_RUN == 1)); then
  row DRY-RUN info 0 "FAKE LOGS: every number below is a fixture (scripts/test_gpu_check_summary.py), not a measurement"
  row device ok 0 "dry run: no device used"
  HAVE_GPU=1
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >"$LOGS/device.log" 2>&1; then
  row device ok 0 "$(head -1 "$LOGS/device.log")"
  HAVE_GPU=1
else
  row device FAILED 0 "nvidia-smi found no GPU: the real-GPU steps cannot pass here"
  HAVE_GPU=0
  FAILED=1
fi

# ---- 1. configure and build (sm_90 only; only what the later steps run)
BUILT=0
if step configure 120 cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90; then
  if ((DRY_RUN == 1)); then
    targets="aesthete bench_cuda_conv gpu_real_tests"
  else
    grep -E "aesthete: (CUDA|cuDNN|NCCL)" "$LOGS/configure.log" | sed 's/^-- //' >"$LOGS/configure-summary.txt" || true
    targets="aesthete $(cmake --build "$BUILD" --target help 2>/dev/null |
      grep -oE '\b(bench_cuda_conv|gpu_real_tests)\b' | sort -u | tr '\n' ' ')"
  fi
  if [[ "$targets" != *gpu_real_tests* || "$targets" != *bench_cuda_conv* ]]; then
    row targets FAILED 0 "no gpu_real_tests or bench_cuda_conv target: is nvcc/cuDNN found? see configure.log"
    FAILED=1
  fi
  # Keep going past a target that fails to build, so the others still build and run.
  keep_going="-k"
  grep -q "^CMAKE_GENERATOR:INTERNAL=Ninja" "$BUILD/CMakeCache.txt" 2>/dev/null && keep_going="-k 0"
  # shellcheck disable=SC2086  # the target list is meant to split into words
  step build 300 cmake --build "$BUILD" -j "$JOBS" --target $targets -- $keep_going && BUILT=1
  if [[ -f "$LOGS/build.log" ]]; then
    grep -E "registers|spill" "$LOGS/build.log" >"$LOGS/ptxas.txt" 2>/dev/null || true
    if [[ -s "$LOGS/ptxas.txt" ]]; then
      spills=$(grep -cE "[1-9][0-9]* bytes spill (stores|loads)" "$LOGS/ptxas.txt" || true)
      row ptxas info 0 "$(grep -c registers "$LOGS/ptxas.txt") kernels, $spills with spills (ptxas.txt)"
    fi
  fi
fi

# ---- 2. the real-GPU tests
step ctest-gpu 180 ctest --test-dir "$BUILD" -L gpu -R '^gpu-real/' --timeout 120 --output-on-failure -j 4
if [[ -f "$LOGS/ctest-gpu.log" ]] && ((HAVE_GPU == 1)); then
  real_skipped=$(grep -E "gpu-real/.*\*\*\*Skipped" "$LOGS/ctest-gpu.log" | grep -vc "test_emulator" || true)
  if ((real_skipped > 0)); then
    row gpu-real-skips FAILED 0 "$real_skipped real-GPU test binaries skipped although nvidia-smi sees a GPU"
    FAILED=1
  fi
fi

# ---- 2b. NCCL on one rank (the multi-rank path needs several GPUs; NCCL refuses two ranks on one).
# Exit 77 (skipped: no NCCL in this build) counts as a failure here, as every skip on a GPU does.
step nccl-smoke 60 "$BUILD/gpu_real_tests" --source-file='*/tests/gpu/test_nccl_smoke.cpp'

# ---- 3. the cuDNN oracle's per-layer error table
step cudnn-oracle 90 "$BUILD/gpu_real_tests" --source-file='*/tests/gpu/test_cudnn_oracle.cpp'

# ---- 4. our convolutions vs cuDNN
step bench_cuda_conv 150 "$BUILD/bench_cuda_conv" --batch "$BATCH"

# ---- 4b. the same in BF16 (issue 15: >= 0.70 of cuDNN on every layer). Half the f32 row's
# measuring time per entry (medians of >= 0.15 s of runs), to fit the budget.
step bench_cuda_conv_bf16 90 "$BUILD/bench_cuda_conv" --batch "$BATCH" --math bf16 --min-time 0.15

# ---- 5. training step and inference vs PyTorch
step compare-cuda 150 "$SRC/bench/compare.sh" "$BUILD" --device cuda --batch "$BATCH" --steps 10

# ---- 5b. the same in BF16 (issue 15's training-step target), only with time to spare
if ((DRY_RUN == 1 || $(remaining) >= 160)); then
  step compare-cuda-bf16 150 "$SRC/bench/compare.sh" "$BUILD" --device cuda --batch "$BATCH" --steps 10 --precision bf16
else
  row compare-cuda-bf16 info 0 "not run (under 160 s of the ${BUDGET_S}s budget left)"
fi

# ---- 6. memory checking of one real-GPU test binary, when the sanitizer exists and time allows
sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
exe="$BUILD/gpu_real_tests"
only="--source-file=*/tests/gpu/test_cuda_elementwise.cpp"
if ((DRY_RUN == 1)); then
  step memcheck 60 "$sanitizer" --tool memcheck --error-exitcode 1 "$exe" "$only"
elif ((HAVE_GPU == 1 && BUILT == 1)) && [[ -x "$sanitizer" && -x "$exe" ]] && (($(remaining) > 90)); then
  step memcheck 60 "$sanitizer" --tool memcheck --error-exitcode 1 "$exe" "$only"
else
  row memcheck info 0 "not run (no sanitizer, binary or time)"
fi

# ---- 6b. the same conv rows in TF32, only with time to spare (the summary shows it when its log exists)
if ((DRY_RUN == 1 || $(remaining) >= 100)); then
  step bench_cuda_conv_tf32 90 "$BUILD/bench_cuda_conv" --batch "$BATCH" --math tf32 --min-time 0.15
else
  row bench_cuda_conv_tf32 info 0 "not run (under 100 s of the ${BUDGET_S}s budget left)"
fi

# ---- 6c. the batch-1 input-gradient pass (enhance, saliency) eager and replayed, with time to spare
if ((DRY_RUN == 1 || $(remaining) >= 45)); then
  step enhance-graph 40 "$BUILD/aesthete" bench --what enhance --device cuda --batch 1 --size 512 --steps 20
else
  row enhance-graph info 0 "not run (under 45 s of the ${BUDGET_S}s budget left)"
fi

# ---- the table
if ((DRY_RUN == 1)); then
  "$PYTHON" "$SRC/scripts/test_gpu_check_summary.py" --write-fixtures "$LOGS" ||
    { echo "gpu-check.sh: could not write the fake logs" >&2; exit 1; }
fi
row total info $(($(date +%s) - START)) "budget ${BUDGET_S}s"
echo
if "$PYTHON" "$SRC/scripts/gpu_check_summary.py" "$LOGS" >"$LOGS/summary.txt" 2>&1; then
  summary_ok=1
else
  summary_ok=0
fi
if [[ ! -s "$LOGS/summary.txt" ]] || ! grep -q '^result:' "$LOGS/summary.txt"; then
  # No table from the summariser (no python?): show the raw step list rather than nothing.
  { echo "gpu-check: the summary script failed; raw steps:"; cat "$LOGS/steps.txt"; echo "result: FAIL"; } >>"$LOGS/summary.txt"
  summary_ok=0
fi
cat "$LOGS/summary.txt"
if ((FAILED == 1 || summary_ok == 0)); then
  exit 1
fi
exit 0

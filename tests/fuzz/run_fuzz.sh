#!/usr/bin/env bash
# run_fuzz.sh TARGET FUZZER SEEDS_TOOL SECONDS — fuzzes one target (CTest test fuzz/TARGET).
#
# Seeds (regenerated when missing, in $AE_BUILD_DIR/fuzz/seeds): real inputs written at test time
# (tests/fuzz/make_seeds.cpp; .pth files by Debian's torch through weights_tools/make_fixtures.py),
# plus every kept input of tests/regressions/TARGET. The corpus grown by earlier runs is kept in
# $AE_BUILD_DIR/fuzz/corpus/TARGET. A crash, a sanitizer report, an input running longer than 10 s
# or allocating more than 2 GB fails the test; the input is saved under
# $AE_BUILD_DIR/fuzz/findings/TARGET/ and the message says how to keep it as a regression.
set -euo pipefail
target=$1 fuzzer=$2 seeds_tool=$3 seconds=$4
src=${AE_SOURCE_DIR:?} build=${AE_BUILD_DIR:?} shared=${AE_SHARED_DIR:-$src/../shared}
root=$build/fuzz
seeds=$root/seeds
mkdir -p "$root"

# Seeds, once per build folder (a lock: the fuzz tests run in parallel).
(
  flock 9
  if [[ ! -e $seeds/.done ]]; then
    rm -rf "$seeds"
    mkdir -p "$seeds/pth"
    photos=$build/test-photos
    "$src/scripts/fetch_test_photos.sh" "$photos" >&2 || { echo "run_fuzz: cannot fetch the sample photos" >&2; exit 1; }
    "$seeds_tool" "$seeds" "$photos" "$shared"
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
      fixtures=$root/pth-fixtures
      /usr/bin/python3 "$src/weights_tools/make_fixtures.py" "$fixtures" > "$root/make_fixtures.log" 2>&1 ||
        { cat "$root/make_fixtures.log" >&2; exit 1; }
      # The small ones: resnet18.pth and whole_model.pth (45 MB) would slow every execution.
      find "$fixtures" -name '*.pt*' -size -256k -exec cp {} "$seeds/pth/" \;
    else
      echo "run_fuzz: no torch for /usr/bin/python3: the pth target starts from tests/regressions/pth only" >&2
    fi
    touch "$seeds/.done"
  fi
) 9> "$root/seeds.lock"

corpus=$root/corpus/$target
findings=$root/findings/$target
mkdir -p "$corpus" "$findings" "$seeds/$target"
dirs=("$corpus" "$seeds/$target")
[[ -d $src/tests/regressions/$target ]] && dirs+=("$src/tests/regressions/$target")
seed_count=$(find "${dirs[@]:1}" -type f | wc -l)
echo "fuzz/$target: $seconds s from $seed_count seed inputs (${dirs[*]:1})"

set +e
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$findings/" "${dirs[@]}" > "$root/$target.log" 2>&1
status=$?
set -e
grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE' "$root/$target.log" || true
if [[ $status -ne 0 ]]; then
  tail -n 60 "$root/$target.log"
  echo "fuzz/$target: FAILED (exit $status). The input is in $findings/; reproduce with" >&2
  echo "  $fuzzer $findings/<file>" >&2
  echo "fix the bug, then keep the input: cp $findings/<file> $src/tests/regressions/$target/" >&2
  exit 1
fi
executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$root/$target.log")
echo "fuzz/$target: passed, ${executions:-?} executions in $seconds s"

#!/usr/bin/env bash
# The CPU workloads people run without a GPU, aesthete against PyTorch on this machine in one run
# (issue 11): each workload is one process per side, timed by itself, with its peak resident memory
# (GNU time's %M). Prints a table of aesthete time / PyTorch time and of the peaks.
#   bench/cpu_suite.sh [BUILD] [--steps K] [--repeat R] [--quick]
# Workloads: forward 224 px batch 1 and batch 32; a training step batch 32; an adapters-mode
# personalisation step batch 30 (frozen backbone); an enhancement step 512 px batch 1 (forward +
# input gradient); scoring a folder of 500x375 JPEGs end to end (decode, resize, network, CSV), as the
# marginal cost per photo between a folder of 16 and one of 96 (start-up excluded).
# --repeat R: each workload R times per side, the sides alternating (aesthete, PyTorch, aesthete, ...);
#   the table shows each side's median time and its largest peak (default 1). PyTorch's batch-1 time
#   moved between 17 and 34 ms from one run to the next on the 2-core dev VM: one run is not enough.
# --quick: small batches and sizes, to check the script itself (not for RESULTS.md).
# PYTHON selects the interpreter with torch (default /usr/bin/python3, Debian's CPU PyTorch).
set -euo pipefail
build=${1:-build}
shift || true
python=${PYTHON:-/usr/bin/python3}
steps=3
repeat=1
quick=0
while (($#)); do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "cpu_suite.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
[[ -x "$build/aesthete" ]] || { echo "cpu_suite.sh: $build/aesthete not found (build it first)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "cpu_suite.sh: needs GNU time (/usr/bin/time, Debian package 'time')" >&2; exit 2; }
threads=$(nproc)
export OMP_NUM_THREADS=$threads  # aesthete's thread pool and OpenBLAS; the peer calls set_num_threads
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

big=32 pers=30 side=224 esize=512 few=16 many=96
if ((quick)); then big=4 pers=4 side=64 esize=96 few=4 many=8; fi

# A seed-head model both sides can read, and folders of JPEGs.
"$python" - "$here/../weights_tools" "$work" "$few" "$many" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import torch
from PIL import Image
from make_reference import AestheteNet
work, few, many = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.save(AestheteNet("seed").state_dict(), os.path.join(work, "model.pth"))
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:375, 0:500]
for n in (few, many):
    d = os.path.join(work, f"photos{n}")
    os.makedirs(d)
    for i in range(n):
        a = rng.uniform(0.5, 3, 3)
        img = np.stack([np.sin(xx / (40 * a[c]) + yy / (60 * a[(c + 1) % 3]) + i) for c in range(3)], -1)
        img = (127.5 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(d, f"p{i:03d}.jpg"), quality=90)
EOF

# run NAME CMD...: runs CMD under GNU time; stdout to $work/NAME.out, peak KB to $work/NAME.mem,
# wall seconds to $work/NAME.wall.
run() {
  local name=$1
  shift
  /usr/bin/time -f "%M %e" -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err" || {
    echo "cpu_suite.sh: '$*' failed:" >&2
    cat "$work/$name.err" >&2
    exit 1
  }
  read -r kb wall < <(tail -1 "$work/$name.time")
  echo "$kb" > "$work/$name.mem"
  echo "$wall" > "$work/$name.wall"
}
# images/s from a bench line of $work/NAME.out
rate() { awk '{for (i = 1; i < NF; i++) if ($(i + 1) == "images/s") print $i}' "$work/$1.out" | head -1; }

rows=()
# median of the numbers on stdin
median() { sort -g | awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# bench WORKLOAD "aesthete args" "peer args": $repeat alternating runs per side; median ms per
# image and the largest peak of each side.
bench() {
  local w=$1 i side a
  for ((i = 0; i < repeat; i++)); do
    # shellcheck disable=SC2086
    run "$w.ae" "$build/aesthete" -q bench --device cpu --steps "$steps" $2
    # shellcheck disable=SC2086
    run "$w.pt" "$python" "$here/torch_peer.py" --device cpu --threads "$threads" --steps "$steps" $3
    for side in ae pt; do
      a=$(rate "$w.$side")
      [[ -n "$a" ]] || { echo "cpu_suite.sh: no images/s for $w ($side)" >&2; exit 1; }
      awk -v a="$a" 'BEGIN {print 1000 / a}' >> "$work/$w.$side.ms"
      cat "$work/$w.$side.mem" >> "$work/$w.$side.mems"
    done
  done
  rows+=("$w $(median < "$work/$w.ae.ms") $(median < "$work/$w.pt.ms") $(sort -g "$work/$w.ae.mems" | tail -1) $(sort -g "$work/$w.pt.mems" | tail -1)")
}

bench "forward-b1" "--what inference --batch 1 --size $side" "--what inference --batch 1 --size $side"
bench "forward-b$big" "--what inference --batch $big --size $side" "--what inference --batch $big --size $side"
bench "train-b$big" "--what train --batch $big --size $side" "--what train --batch $big --size $side"
bench "personalise-adapters-b$pers" "--what personalise --mode adapters --batch $pers --size $side" \
  "--what personalise --batch $pers --size $side"
bench "enhance-$esize-b1" "--what enhance --batch 1 --size $esize" "--what enhance --batch 1 --size $esize"

# Scoring a folder: the same photos, 16 to a batch on both sides; the difference between the two
# folders over the difference in photos is the cost of one more photo.
per_photo() { awk -v a="$(cat "$work/score$many.$1.wall")" -v b="$(cat "$work/score$few.$1.wall")" -v n=$((many - few)) \
  'BEGIN {printf "%.1f", 1000 * (a - b) / n}'; }
for ((i = 0; i < repeat; i++)); do
  for n in $few $many; do
    run "score$n.ae" "$build/aesthete" -q score --device cpu --size "$side" --model "$work/model.pth" "$work/photos$n"
    run "score$n.pt" "$python" "$here/torch_peer.py" --what score --device cpu --threads "$threads" --batch 16 \
      --size "$side" --folder "$work/photos$n"
    for side_name in ae pt; do
      got=$(($(wc -l < "$work/score$n.$side_name.out") - 1))
      [[ $got -eq $n ]] || { echo "cpu_suite.sh: score$n.$side_name wrote $got rows for $n photos" >&2; exit 1; }
    done
  done
  for side_name in ae pt; do
    per_photo $side_name >> "$work/score.$side_name.ms"
    cat "$work/score$many.$side_name.mem" >> "$work/score.$side_name.mems"
  done
done
rows+=("score-folder-per-photo $(median < "$work/score.ae.ms") $(median < "$work/score.pt.ms") $(sort -g "$work/score.ae.mems" | tail -1) $(sort -g "$work/score.pt.mems" | tail -1)")

echo "# $(date -u +%F) $(uname -m), $(nproc) threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# aesthete $(cd "$here/.." && git rev-parse --short HEAD 2>/dev/null || echo '?'), $("$python" -c 'import torch; print("pytorch", torch.__version__)'), steps $steps, repeat $repeat (median)"
# OpenBLAS runs aesthete's GEMMs: its kernel set (OPENBLAS_CORETYPE forces one) and aesthete's GEMM threading.
echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, AE_CPU_GEMM=${AE_CPU_GEMM:-unset}; $(grep -m1 -o 'GEMM: .*' "$work/forward-b1.ae.out" || echo 'GEMM: ?')"
printf "%-30s %12s %12s %8s %12s %12s %8s\n" workload "aesthete ms" "pytorch ms" "time x" "aesthete MB" "pytorch MB" "peak x"
for r in "${rows[@]}"; do
  # shellcheck disable=SC2086
  set -- $r
  awk -v w="$1" -v a="$2" -v b="$3" -v ma="$4" -v mb="$5" \
    'BEGIN {printf "%-30s %12.1f %12.1f %8.2f %12.0f %12.0f %8.2f\n", w, a, b, a / b, ma / 1024, mb / 1024, ma / mb}'
done
echo "# ms: per image (a step over the batch size; the marginal cost of one more photo for scoring), the median of the repeats; MB: the largest peak RSS of the process; x: aesthete / PyTorch, lower is better"

#!/usr/bin/env bash
# Side-by-side throughput: aesthete and PyTorch on the same machine, same run, same work
# (seed-head ResNet-18 training step and inference). Prints both and the ratio.
#   bench/compare.sh [BUILD] [--device cpu|cuda] [--batch N] [--size S] [--steps K]
# PYTHON selects the interpreter with torch+torchvision (default /usr/bin/python3).
set -euo pipefail
build=${1:-build}
shift || true
python=${PYTHON:-/usr/bin/python3}
ours=$("$build/aesthete" -q bench --what model "$@")
theirs=$("$python" "$(dirname "$0")/torch_peer.py" "$@")
echo "$ours" | sed 's/^/aesthete  /'
echo "$theirs" | sed 's/^/pytorch   /'
for kind in train-step inference; do
  a=$(echo "$ours" | awk -v k="$kind" '$1==k {for(i=1;i<=NF;i++) if($(i+1)=="images/s") print $i}')
  b=$(echo "$theirs" | awk -v k="$kind" '$1==k {for(i=1;i<=NF;i++) if($(i+1)=="images/s") print $i}')
  awk -v k="$kind" -v a="$a" -v b="$b" 'BEGIN {printf "ratio     %-10s aesthete/pytorch = %.2fx\n", k, a/b}'
done

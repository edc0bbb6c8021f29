#!/usr/bin/env bash
# Side-by-side throughput: aesthete and PyTorch on the same machine, same run, same work
# (seed-head ResNet-18 training step and inference). Prints both and the ratio.
#   bench/compare.sh [BUILD] [--what model|enhance] [--device cpu|cuda] [--batch N] [--size S] [--steps K] [--precision P]
# --what model (default): training step and inference; enhance: eval forward + input gradient
# (weights frozen), e.g. --what enhance --batch 1 --size 512.
# PYTHON selects the interpreter with torch (default /usr/bin/python3, Debian's CPU PyTorch; on a
# GPU machine use one whose PyTorch has CUDA, e.g. PYTHON=python3).
# --precision (f32 default) goes to both sides; aesthete refuses a precision it cannot run on
# the chosen device (the CPU is f32 only) rather than compare unlike with unlike. With bf16,
# aesthete also stores its activations in bf16 (--activations bf16), as PyTorch's autocast does.
set -euo pipefail
build=${1:-build}
shift || true
python=${PYTHON:-/usr/bin/python3}
ours_args=()
ours_global=()
peer_args=()
what=model
while (($#)); do
  case "$1" in
    --what)
      [[ $# -ge 2 ]] || { echo "compare.sh: --what needs a value" >&2; exit 2; }
      what=$2
      shift 2 ;;
    --precision)
      [[ $# -ge 2 ]] || { echo "compare.sh: --precision needs a value" >&2; exit 2; }
      peer_args+=("$1" "$2")
      ours_args+=("$1" "$2")
      # PyTorch's bf16 autocast stores its activations in bf16: ours store them so too.
      [[ $2 == bf16 ]] && ours_global=(--activations bf16)
      shift 2 ;;
    *)
      ours_args+=("$1")
      peer_args+=("$1")
      shift ;;
  esac
done
[[ -x "$build/aesthete" ]] || { echo "compare.sh: $build/aesthete not found (build it first)" >&2; exit 2; }
ours=$("$build/aesthete" -q "${ours_global[@]}" bench --what "$what" "${ours_args[@]}")
theirs=$("$python" "$(dirname "$0")/torch_peer.py" --what "$what" "${peer_args[@]}")
echo "$ours" | sed 's/^/aesthete  /'
echo "$theirs" | sed 's/^/pytorch   /'
kinds="train-step inference"
[[ $what == enhance ]] && kinds="enhance-step"
for kind in $kinds; do
  a=$(echo "$ours" | awk -v k="$kind" '$1==k {for(i=1;i<=NF;i++) if($(i+1)=="images/s") print $i}')
  b=$(echo "$theirs" | awk -v k="$kind" '$1==k {for(i=1;i<=NF;i++) if($(i+1)=="images/s") print $i}')
  if [[ -z "$a" || -z "$b" ]]; then
    echo "compare.sh: no '$kind ... images/s' line from $([[ -z "$a" ]] && echo aesthete || echo pytorch)" >&2
    exit 1
  fi
  awk -v k="$kind" -v a="$a" -v b="$b" 'BEGIN {printf "ratio     %-10s aesthete/pytorch = %.2fx\n", k, a/b}'
done

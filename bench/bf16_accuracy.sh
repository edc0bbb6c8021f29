#!/usr/bin/env bash
# Accuracy of BF16 and TF32 training against FP32 on one training run (issue 15).
#
#   bench/bf16_accuracy.sh BUILD_DIR [--work DIR] [--count N] [--width PX] [--height PX]
#                          [--data-seed S] [--train N] [--val N] [--test N] [--size S]
#                          [--epochs E] [--batch B] [--lr LR] [--seed S] [--noise-seed S2]
#                          [--maths "f32 bf16 tf32 bf16+act"] [--no-cpu] [--jobs J] [--nice N]
#
# Trains the same configuration (same generated data set, same split, same seed) once per CUDA
# convolution arithmetic (--conv-math f32 | bf16 | tf32, kernels/cuda/conv_math.h) and once on the
# CPU as a reference, then prints markdown tables: per-epoch train loss / validation MSE, Spearman,
# Pearson (each run's metrics.csv), the test metrics of each run's model.safetensors on held-out
# images (scored by `aesthete score --device cpu`, so every model is evaluated in the same fp32
# arithmetic), the differences against cuda f32, and wall time. A noise floor comes with it: the
# CPU run again with --noise-seed, and cuda f32 with --noise-seed.
#
# What bf16 means here: the conv GEMM operands (activations, weights, gradients) are rounded to
# bfloat16 as they are staged, accumulation is fp32; tensors, master weights, BatchNorm, reductions
# and the optimiser stay fp32. "bf16+act" adds bf16 *storage* of the activations between layers
# (`--activations bf16`, model/resnet18.h: the fused epilogues write bf16, the bf16 convolutions
# read it as it is; statistics, gradients, master weights and the optimiser stay fp32), run
# `cuda_bf16_act`; with it the CPU runs once more with bf16 storage in fp32 arithmetic
# (`cpu_bf16_act`), which separates the storage's effect from the arithmetic's.
#
# Where it runs:
#   - a CUDA build (nvcc found): `aesthete --conv-math M train --device cuda ...` on the GPU;
#   - an emulated-device build (AE_CUDA=OFF, AE_EMULATED_DEVICE=ON): the aesthete binary there has
#     no CUDA backend and refuses --device cuda, so this script compiles a small driver (below) that
#     links the build's libraries plus kernels/libae_cuda_emu.a and calls the same library entry
#     point as `aesthete train` (train::run_training), with the arithmetic from AE_CONV_MATH and
#     the activation storage from AE_ACTIVATIONS. The
#     emulated device runs the same kernel sources on CPU fibers, so the numbers are the GPU
#     kernels' arithmetic; its speed says nothing about a GPU. It is slow, the tensor-core modes
#     most (the default configuration: f32 46 s, bf16 7 min, tf32 11 min per run on 2 vCPUs,
#     2026-12-01): keep the run small there.
# Nothing is hard-coded: every number printed is read from the runs' files.
set -euo pipefail

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
BUILD=$(cd "$1" && pwd); shift
WORK=${TMPDIR:-/tmp}/ae_bf16_accuracy
COUNT=400 WIDTH=48 HEIGHT=40 DATA_SEED=1 SIZE=32 EPOCHS=3 BATCH=16 LR=0.001 SEED=7 NOISE_SEED=8
MATHS="f32 bf16 tf32" CPU=1 JOBS=3 NICE=10
NTRAIN="" NVAL="" NTEST=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --work) WORK=$2; shift 2;;
    --count) COUNT=$2; shift 2;;
    --width) WIDTH=$2; shift 2;;
    --height) HEIGHT=$2; shift 2;;
    --data-seed) DATA_SEED=$2; shift 2;;
    --size) SIZE=$2; shift 2;;
    --epochs) EPOCHS=$2; shift 2;;
    --batch) BATCH=$2; shift 2;;
    --lr) LR=$2; shift 2;;
    --seed) SEED=$2; shift 2;;
    --noise-seed) NOISE_SEED=$2; shift 2;;   # empty: no noise-floor runs
    --maths) MATHS=$2; shift 2;;
    --no-cpu) CPU=0; shift;;
    --jobs) JOBS=$2; shift 2;;               # runs at once (the emulated runs are CPU-bound)
    --nice) NICE=$2; shift 2;;
    --train) NTRAIN=$2; shift 2;;            # split sizes (default: 32 % / 8 % / 20 % of --count)
    --val) NVAL=$2; shift 2;;
    --test) NTEST=$2; shift 2;;
    *) usage;;
  esac
done
NTRAIN=${NTRAIN:-$((COUNT * 8 / 25))} NVAL=${NVAL:-$((COUNT * 2 / 25))} NTEST=${NTEST:-$((COUNT / 5))}
(( NTRAIN + NVAL + NTEST <= COUNT )) || { echo "train+val+test > --count" >&2; exit 2; }
AE=$BUILD/aesthete
[[ -x $AE ]] || { echo "no $AE (build the aesthete target)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed for the tables" >&2; exit 1; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/commands.txt
: > "$LOG"
say() { printf '%s\n' "$*" | tee -a "$LOG" >&2; }
quote() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; printf '%s' "${out% }"; }

# ---- the data set and its split (rows of labels.csv in file order) ----
DS=$WORK/data
if [[ ! -f $DS/labels.csv || $(cat "$DS/.args" 2>/dev/null) != "$COUNT $WIDTH $HEIGHT $DATA_SEED" ]]; then
  rm -rf "$DS"
  cmd=("$AE" make-dataset --out "$DS" --count "$COUNT" --width "$WIDTH" --height "$HEIGHT" --seed "$DATA_SEED")
  say "\$ $(quote "${cmd[@]}")"
  "${cmd[@]}" >&2
  echo "$COUNT $WIDTH $HEIGHT $DATA_SEED" > "$DS/.args"
fi
split() {  # split NAME FIRST_ROW ROWS
  { head -1 "$DS/labels.csv"; tail -n +2 "$DS/labels.csv" | sed -n "$2,$(($2 + $3 - 1))p"; } > "$WORK/$1.csv"
}
split train 1 "$NTRAIN"
split val $((NTRAIN + 1)) "$NVAL"
split test $((COUNT - NTEST + 1)) "$NTEST"
say "# split: train rows 1-$NTRAIN, val rows $((NTRAIN + 1))-$((NTRAIN + NVAL)), test rows $((COUNT - NTEST + 1))-$COUNT of $DS/labels.csv"

# ---- how CUDA training is launched in this build ----
probe=$("$AE" train --train-csv "$WORK/nonexistent.csv" --images "$DS" --out "$WORK/probe" --device cuda 2>&1 || true)
if grep -q "no usable CUDA device" <<< "$probe"; then
  if [[ -f $BUILD/kernels/libae_cuda_emu.a && -f $BUILD/CMakeFiles/aesthete.dir/link.txt ]]; then
    CUDA_MODE=emulated
  else
    CUDA_MODE=none
    say "# no CUDA device and no emulated-device library in $BUILD: CPU runs only (${probe%%$'\n'*})"
  fi
else
  CUDA_MODE=aesthete
fi

DRIVER=$WORK/emu_train
if [[ $CUDA_MODE == emulated ]]; then
  SRC=$(cd "$(dirname "$0")/.." && pwd)
  cat > "$WORK/emu_train.cpp" <<'EOF'
// `aesthete train` on the emulated CUDA device (written by bench/bf16_accuracy.sh): the same
// library call as apps/cmd_train.cpp, linked against kernels/libae_cuda_emu.a. The conv
// arithmetic comes from AE_CONV_MATH (kernels/cuda/conv_math.h), the activation storage from
// AE_ACTIVATIONS (f32 or bf16, as --activations).
#include <cstdio>
#include <cstdlib>
#include <string>
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/runtime.h"
#include "model/resnet18.h"
#include "train/trainer.h"
using namespace ae;
int main(int argc, char** argv) {
  if (const char* a = std::getenv("AE_ACTIVATIONS"))
    model::set_default_activation_dtype(model::parse_activation_dtype(a, "AE_ACTIVATIONS"));
  train::TrainOptions o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--train-csv") o.train_csv = v;
    else if (k == "--val-csv") o.val_csv = v;
    else if (k == "--images") o.images_dir = v;
    else if (k == "--out") o.out_dir = v;
    else if (k == "--epochs") o.epochs = std::stoi(v);
    else if (k == "--batch") o.batch = std::stoll(v);
    else if (k == "--lr") o.lr = std::stof(v);
    else if (k == "--size") o.size = std::stoi(v);
    else if (k == "--resize-to") o.resize_to = std::stoi(v);
    else if (k == "--seed") o.seed = std::stoull(v);
    else if (k == "--device") o.device = v == "cpu" ? Device::cpu() : Device::cuda(0);
    else { std::fprintf(stderr, "emu_train: unknown option %s\n", k.c_str()); return 2; }
  }
  if (o.device.is_cuda()) {
    const cuda::DeviceInfo& info = cuda::initialize();
    if (!info.usable) { std::fprintf(stderr, "emu_train: %s\n", info.reason.c_str()); return 1; }
    std::fprintf(stderr, "emu_train: %s, conv math %s, activations %s\n", info.name.c_str(),
                 cuda::conv_math_name(cuda::conv_math()), dtype_name(model::default_activation_dtype()));
  }
  return train::run_training(o, std::nullopt).diverged ? 1 : 0;
}
EOF
  # aesthete's own link line, with the emulated CUDA backend added in front of libae_kernels.a.
  read -r -a link < "$BUILD/CMakeFiles/aesthete.dir/link.txt"
  libs=() seen=0
  for w in "${link[@]}"; do
    if (( seen == 2 )); then
      [[ $w == libae_kernels.a ]] && libs+=("$BUILD/kernels/libae_cuda_emu.a")
      [[ $w == -* || $w == /* ]] && libs+=("$w") || libs+=("$BUILD/$w")
    fi
    if [[ $w == -o ]]; then seen=1; elif (( seen == 1 )); then seen=2; fi
  done
  cmd=(c++ -O2 -std=c++20 -I"$SRC" "$WORK/emu_train.cpp" -o "$DRIVER" "${libs[@]}" -lpthread)
  say "\$ $(quote "${cmd[@]}")"
  "${cmd[@]}"
fi

# ---- the runs ----
COMMON=(--train-csv "$WORK/train.csv" --val-csv "$WORK/val.csv" --images "$DS" --epochs "$EPOCHS"
        --batch "$BATCH" --lr "$LR" --size "$SIZE" --resize-to $((SIZE * 9 / 8)))
RUNS=()
run_cmd() {  # run_cmd NAME DEVICE MATH SEED ACTIVATIONS -> the command in CMD, environment in ENVV
  local name=$1 device=$2 math=$3 seed=$4 act=$5
  ENVV=()
  if [[ $device == cpu ]]; then
    CMD=("$AE" --activations "$act" train "${COMMON[@]}" --seed "$seed" --device cpu --out "$WORK/runs/$name")
  elif [[ $CUDA_MODE == aesthete ]]; then
    CMD=("$AE" --conv-math "$math" --activations "$act" train "${COMMON[@]}" --seed "$seed" --device cuda
         --out "$WORK/runs/$name")
  else
    ENVV=(AE_CONV_MATH="$math" AE_ACTIVATIONS="$act")
    CMD=("$DRIVER" "${COMMON[@]}" --seed "$seed" --device cuda --out "$WORK/runs/$name")
  fi
}
PLAN=()  # "NAME DEVICE MATH SEED ACTIVATIONS"
if [[ $CUDA_MODE != none ]]; then
  for m in $MATHS; do
    case $m in
      *+act) PLAN+=("cuda_${m%+act}_act cuda ${m%+act} $SEED bf16");;
      *) PLAN+=("cuda_$m cuda $m $SEED f32");;
    esac
  done
  [[ -n $NOISE_SEED && " $MATHS " == *" f32 "* ]] && PLAN+=("cuda_f32_s$NOISE_SEED cuda f32 $NOISE_SEED f32")
fi
if (( CPU )); then
  PLAN+=("cpu cpu f32 $SEED f32")
  [[ " $MATHS " == *"+act "* ]] && PLAN+=("cpu_bf16_act cpu f32 $SEED bf16")
  [[ -n $NOISE_SEED ]] && PLAN+=("cpu_s$NOISE_SEED cpu f32 $NOISE_SEED f32")
fi
mkdir -p "$WORK/runs"
running=0
for p in "${PLAN[@]}"; do
  read -r name device math seed act <<< "$p"
  run_cmd "$name" "$device" "$math" "$seed" "$act"
  rm -rf "$WORK/runs/$name"
  say "\$ $( ((${#ENVV[@]})) && printf '%s ' "${ENVV[@]}")nice -n $NICE $(quote "${CMD[@]}")"
  (
    start=$(date +%s.%N)
    rc=0
    env "${ENVV[@]}" nice -n "$NICE" "${CMD[@]}" > "$WORK/runs/$name.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    echo "$rc $(python3 -c "print(f'{$end - $start:.1f}')")" > "$WORK/runs/$name.status"
  ) &
  RUNS+=("$name")
  running=$((running + 1))
  if (( running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
done
wait

# ---- test scores (every model evaluated on the CPU in fp32) ----
mapfile -t TEST_IMAGES < <(tail -n +2 "$WORK/test.csv" | cut -d, -f1)
for name in "${RUNS[@]}"; do
  read -r rc _ < "$WORK/runs/$name.status"
  if [[ $rc != 0 || ! -f $WORK/runs/$name/model.safetensors ]]; then
    say "# $name failed (exit $rc): see $WORK/runs/$name.log"; tail -5 "$WORK/runs/$name.log" >&2; continue
  fi
  cmd=("$AE" score --model "$WORK/runs/$name/model.safetensors" --device cpu)
  say "\$ $(quote "${cmd[@]}") <$NTEST test images of $WORK/test.csv> > $WORK/runs/$name.test_scores.csv"
  (cd "$DS" && "${cmd[@]}" "${TEST_IMAGES[@]}") > "$WORK/runs/$name.test_scores.csv"
done

# ---- tables ----
python3 - "$WORK" "$CUDA_MODE" "${RUNS[@]}" <<'EOF'
import csv, math, os, sys
work, mode, runs = sys.argv[1], sys.argv[2], sys.argv[3:]

def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i]); r = [0.0] * len(v); i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]: j += 1
        for k in range(i, j + 1): r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r

def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return num / den if den else float("nan")

labels = {r["image"]: float(r["score"]) for r in csv.DictReader(open(os.path.join(work, "test.csv")))}
data = {}
for name in runs:
    rc, wall = open(os.path.join(work, "runs", name + ".status")).read().split()
    d = {"rc": int(rc), "wall": float(wall), "epochs": [], "test": None}
    m = os.path.join(work, "runs", name, "metrics.csv")
    if os.path.exists(m):
        d["epochs"] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(m))]
    t = os.path.join(work, "runs", name + ".test_scores.csv")
    if d["rc"] == 0 and os.path.exists(t):
        pred, true = [], []
        for row in csv.reader(open(t)):
            if not row or row[0] == "path": continue
            base = os.path.basename(row[0])
            if base in labels: pred.append(float(row[1])); true.append(labels[base])
        if pred:
            d["test"] = (len(pred), sum((p - y) ** 2 for p, y in zip(pred, true)) / len(pred),
                         pearson(ranks(pred), ranks(true)), pearson(pred, true))
    data[name] = d

print(f"CUDA runs: {mode} ({'emulated device, CPU fibers: the GPU kernels arithmetic, not their speed' if mode == 'emulated' else 'aesthete --device cuda' if mode == 'aesthete' else 'none'})\n")
print("| run | epoch | train loss | val MSE | val Spearman | val Pearson | epoch s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name in runs:
    for e in data[name]["epochs"]:
        print(f"| {name} | {int(e['epoch'])} | {e['train_loss']:.6f} | {e['val_mse']:.6f} | {e['val_spearman']:.4f} "
              f"| {e['val_pearson']:.4f} | {e['seconds']:.1f} |")

ref = "cuda_f32" if "cuda_f32" in data and data["cuda_f32"]["epochs"] else "cpu"
R = data.get(ref, {"epochs": [], "test": None})
print(f"\nDifferences against {ref} (same seed unless the name says _sN; the _sN and cpu rows are the noise floor):\n")
print("| run | exit | final val MSE | Δ val MSE | final val Spearman | Δ Spearman | max abs Δ train loss (epoch) "
      "| max abs Δ val MSE (epoch) | test MSE | test Spearman | test Pearson | Δ test Spearman | wall s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in runs:
    d = data[name]; E = d["epochs"]
    if not E:
        print(f"| {name} | {d['rc']} | - | - | - | - | - | - | - | - | - | - | {d['wall']:.0f} |"); continue
    f = E[-1]; rf = R["epochs"][-1] if R["epochs"] else None
    def maxdiff(key):
        diffs = [(abs(a[key] - b[key]), int(a["epoch"])) for a, b in zip(E, R["epochs"])]
        return f"{max(diffs)[0]:.4f} ({max(diffs)[1]})" if diffs else "-"
    dm = f"{f['val_mse'] - rf['val_mse']:+.4f}" if rf else "-"
    ds = f"{f['val_spearman'] - rf['val_spearman']:+.4f}" if rf else "-"
    t = d["test"]; rt = R["test"]
    ts = (f"{t[1]:.4f} | {t[2]:.4f} | {t[3]:.4f}") if t else "- | - | -"
    dts = f"{t[2] - rt[2]:+.4f}" if t and rt else "-"
    print(f"| {name} | {d['rc']} | {f['val_mse']:.4f} | {dm} | {f['val_spearman']:.4f} | {ds} | {maxdiff('train_loss')} "
          f"| {maxdiff('val_mse')} | {ts} | {dts} | {d['wall']:.0f} |")
n = next((d["test"][0] for d in data.values() if d["test"]), 0)
print(f"\nTest: {n} held-out images, each run's model.safetensors (best val epoch) scored by `aesthete score --device cpu`.")
EOF
say "# commands: $LOG; runs: $WORK/runs"

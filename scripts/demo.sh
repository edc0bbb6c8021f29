#!/usr/bin/env bash
# make demo: the main job end to end on an embedded default, on the CPU (or a GPU if usable).
#
# No pretrained aesthetics weights can be downloaded here, so the demo makes its own data: a
# generated photo set whose score is a known function of brightness (`aesthete make-dataset`),
# trains a ResNet-18 with the original system's seed head on it (`aesthete train`, model
# selection on a validation split of the training images), then scores real photos that ship in
# Debian packages (`aesthete score`). The scores therefore mean "how bright", not "how
# beautiful": train on FLICKR-AES (README) for real aesthetics.
set -euo pipefail
build=${1:-build}
bin="$build/aesthete"
work="$build/demo"
mkdir -p "$work"

echo "== 1. a generated data set (score = a known function of brightness)"
[ -f "$work/data/labels.csv" ] || "$bin" make-dataset --out "$work/data" --count 360 --width 64 --height 48 --seed 1

echo "== 2. train a ResNet-18 with the seed head (48 px, 5 epochs, about a minute on 2 cores)"
rm -rf "$work/run"
"$bin" train --train-csv "$work/data/labels.csv" --images "$work/data" --out "$work/run" \
  --size 48 --resize-to 56 --epochs 5 --batch 24 --lr 1e-3 --decay-every 2 --seed 1

echo "== 3. score real photos (from Debian's python3-skimage, matplotlib and sklearn data)"
photos="$work/photos"
if scripts/fetch_test_photos.sh "$photos" >/dev/null 2>&1; then
  rm -f "$photos/truncated.jpg"  # a deliberately broken file kept for the decoder tests
  "$bin" score --model "$work/run/model.safetensors" "$photos" | column -t -s,
else
  echo "(could not fetch the Debian photo packages; scoring the generated images instead)"
  "$bin" score --model "$work/run/model.safetensors" "$work/data/img_00000.png" "$work/data/img_00001.png"
fi
echo
echo "Model: $work/run/model.safetensors   report: $work/run/report.html   metrics: $work/run/metrics.csv"

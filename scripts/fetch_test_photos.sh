#!/usr/bin/env bash
# fetch_test_photos.sh DIR — puts a few real photos into DIR for the image decoding tests.
#
# The photos come from Debian packages (same files on every Debian 12 machine):
#   python3-skimage        -> astronaut.png chelsea.png coffee.png camera.png logo.png
#                             green_palette.png rocket.jpg hubble_deep_field.jpg truncated.jpg
#                             motorcycle_left.png
#   python-matplotlib-data -> grace_hopper.jpg
#   python3-sklearn        -> china.jpg flower.jpg
# The .deb files are fetched with `apt-get download` (nothing is installed) and unpacked with
# `dpkg-deb -x` into a temporary folder. `apt-get update` runs only if a download fails.
# Exits 0 when every photo is in DIR, non-zero (with a message) otherwise.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1

skimage=(astronaut.png chelsea.png coffee.png camera.png logo.png green_palette.png rocket.jpg
         hubble_deep_field.jpg truncated.jpg motorcycle_left.png)
matplotlib=(grace_hopper.jpg)
sklearn=(china.jpg flower.jpg)
all=("${skimage[@]}" "${matplotlib[@]}" "${sklearn[@]}")

missing=0
for f in "${all[@]}"; do [[ -s "$dir/$f" ]] || missing=1; done
if [[ $missing -eq 0 ]]; then
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "fetch_test_photos: $tool not found (needs Debian)" >&2; exit 1; }
done

mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
packages=(python3-skimage python-matplotlib-data python3-sklearn)

download() { (cd "$work" && apt-get download -q "${packages[@]}") >"$work/download.log" 2>&1; }
if ! download; then
  echo "fetch_test_photos: apt-get download failed, running apt-get update and retrying" >&2
  apt-get update -q >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; exit 1; }
  download || { cat "$work/download.log" >&2; exit 1; }
fi

for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

copy() {  # copy SOURCE_DIR FILE...: copied under a temporary name, then renamed into place
  local src=$1; shift
  for f in "$@"; do
    [[ -s "$src/$f" ]] || { echo "fetch_test_photos: $f not found in $src" >&2; exit 1; }
    cp "$src/$f" "$dir/.$f.tmp.$$"
    mv -f "$dir/.$f.tmp.$$" "$dir/$f"
  done
}
copy "$work/root/usr/lib/python3/dist-packages/skimage/data" "${skimage[@]}"
copy "$work/root/usr/share/matplotlib/mpl-data/sample_data" "${matplotlib[@]}"
copy "$work/root/usr/lib/python3/dist-packages/sklearn/datasets/images" "${sklearn[@]}"
echo "fetch_test_photos: ${#all[@]} photos in $dir"

#!/usr/bin/env bash
# Installs the Debian packages that aesthete's build and tests need, when missing.
# Idempotent and silent when everything is there; a clear message when it cannot install.
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  libopenblas-dev      # sgemm for the CPU backend
  libpng-dev libjpeg62-turbo-dev zlib1g-dev
  doctest-dev nlohmann-json3-dev libcli11-dev
  python3-torch python3-torchvision   # PyTorch references for the parity tests (/usr/bin/python3)
  clang-14 libclang-rt-14-dev llvm-14   # make sanitize: ASan/UBSan and libFuzzer runtimes, llvm-symbolizer
  python3-dev pybind11-dev python3-pybind11 python3-numpy python3-pytest   # the Python module and its tests
  libopenmpi-dev openmpi-bin   # multi-process runs under mpirun (runtime/dist.h) and their tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "bootstrap: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

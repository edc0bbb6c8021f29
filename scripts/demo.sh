#!/usr/bin/env bash
# make demo: `aesthete demo` on the CPU (or a GPU when one is usable), after `make build`.
#
# The demo fetches real photos from Debian's packages once (apt-get download + dpkg-deb -x, cached
# in ~/.cache/aesthete/photos), makes edited variants of them rated by simulated people, trains a
# generic ResNet-18, personalises it for each person, enhances held-out photos for each of them,
# explains the scores with saliency maps, and writes one page: aesthete-demo/index.html.
# Extra arguments go to `aesthete demo` (e.g. DEMO_ARGS=--quick make demo).
set -euo pipefail
build=${1:-build}
shift || true
exec "$build/aesthete" demo --out "${DEMO_OUT:-aesthete-demo}" ${DEMO_ARGS:-} "$@"

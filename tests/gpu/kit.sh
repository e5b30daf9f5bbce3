#!/usr/bin/env bash
# `make gpu-kit`: download into .gpu-kit/ exactly the wheels the device machine lacks
# (tests/gpu/kit-requirements.txt, checked by tests/gpu/kit.py), for its platform
# (CPython 3.12, manylinux x86-64), and print their total size. The folder appears
# under its final name only when the kit is complete and checked.
#
#   bash tests/gpu/kit.sh [FOLDER]      # default .gpu-kit (ignored by git; carried to the device)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
KIT=${1:-.gpu-kit}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
mapfile -t PINS < <("$PY" tests/gpu/kit.py pins)
PLATFORMS=()
for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
         manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
STAGE=$(mktemp -d "${KIT%/}.partial.XXXXXX")
chmod 755 "$STAGE"
trap 'rm -rf "$STAGE"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" --dest "$STAGE" "${PINS[@]}"
"$PY" tests/gpu/kit.py check "$STAGE" | sed "s#$STAGE#$KIT#"
rm -rf "$KIT.old"
if [ -e "$KIT" ]; then mv "$KIT" "$KIT.old"; fi
mv "$STAGE" "$KIT"
rm -rf "$KIT.old"
trap - EXIT

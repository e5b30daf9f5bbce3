#!/usr/bin/env bash
# `make demo`: for each examples/NN-name/ in order, create its input data
# (prepare.py, offline), run each of its manifests with `gpubatch run`, then
# its compare.py, if any, which reads the outputs back and prints what they show.
# pvc://data/... and pvc://out/... map to the example's data/ and out/ folders,
# as a cluster would map them to PersistentVolumeClaims.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
for dir in [0-9][0-9]-*/; do
  dir=${dir%/}
  echo "=== example $dir"
  mkdir -p "$dir/data" "$dir/out"
  if [[ -f "$dir/prepare.py" ]]; then
    (cd "$dir" && "$PY" prepare.py)
  fi
  for manifest in "$dir"/*.yaml; do
    [[ -e "$manifest" ]] || continue
    echo "--- gpubatch run $manifest"
    gpubatch run "$manifest" --mount "data=$dir/data" --mount "out=$dir/out" | tail -n 1 | "$PY" -m json.tool
  done
  if [[ -f "$dir/compare.py" ]]; then
    echo "--- $dir/compare.py"
    (cd "$dir" && "$PY" compare.py)
  fi
done
echo "=== demo finished: outputs under examples/*/out/"

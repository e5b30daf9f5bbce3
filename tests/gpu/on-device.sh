#!/usr/bin/env bash
# The GPU check: everything this project runs on a GPU, in one call of the device machine
# (README, "The GPU check"). Prepared and tried here on a CPU; run it unchanged there:
#
#   make gpu-kit                        # here: the wheels the device lacks, into .gpu-kit/
#   device run: bash tests/gpu/on-device.sh    carry [".gpu-kit"]
#
# At the root of the copied tree it installs the kit into a temporary site folder (no
# index, no network), then runs these steps, each under its own time limit so that one
# hang cannot eat the lease, all of them within 8 minutes (GPU_CHECK_SECONDS, default 450):
#
#   setup          the kit, the versions, nvidia-smi, what the driver probe sees
#   doctor         gpubatch doctor --json
#   pytest-torch   pytest -m gpu -rs tests/gpu, KERAS_BACKEND=torch (CuPy render, TrainJob, PredictJob)
#   render         bench/render.py: the seed's way, the CuPy kernel alone, end to end into HDF5
#   predict-torch  bench/predict.py --backend torch --device gpu, beside the seed's way
#   pytest-jax     pytest -m gpu -rs on the Keras tests, KERAS_BACKEND=jax
#   predict-jax    bench/predict.py --backend jax --device gpu, beside the seed's way
#
# GPU_CHECK_STEPS=pytest-jax,predict-jax (say) reruns only those steps after setup, for a second
# call within the lease. TensorFlow is not on the device (too large to carry): its GPU path stays
# unverified.
# Every output goes under $OUT (one STEP.log each, and summary.txt: 8 files, what the device
# tool brings back); the summary line is summary.txt's first line and this script's last.
# Where no GPU is visible every GPU row says "no GPU" and the step still passes; the exit
# status is 0 when no step failed or ran out of time.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$(mktemp -d /tmp/gpubatch-gpu-check.XXXXXX)}
mkdir -p "$OUT"
KIT=${GPU_KIT:-.gpu-kit}
BUDGET=${GPU_CHECK_SECONDS:-450}
PY=${PYTHON:-python3}
STARTED=$(date +%s)
SITE=$(mktemp -d /tmp/gpubatch-site.XXXXXX)
SCRATCH=$(mktemp -d /tmp/gpubatch-scratch.XXXXXX)
trap 'rm -rf "$SITE" "$SCRATCH"' EXIT

export PYTHONPATH="$SITE:$ROOT/jobs:$ROOT/operator:$ROOT" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PATH="$SITE/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg MPLCONFIGDIR="$SCRATCH/mpl"
export KERAS_HOME="$SCRATCH/keras" TMPDIR="$SCRATCH"

SUMMARY=()

elapsed() { echo $(( $(date +%s) - STARTED )); }

# step NAME SECONDS COMMAND...: run with its output in $OUT/NAME.log, within SECONDS and the budget.
step() {
  local name=$1 cap=$2 left limit rc
  shift 2
  if [[ $name != setup && -n ${GPU_CHECK_STEPS:-} && ,$GPU_CHECK_STEPS, != *,$name,* ]]; then
    return
  fi
  left=$(( BUDGET - $(elapsed) - 5 ))
  limit=$(( cap < left ? cap : left ))
  if (( limit < 10 )); then
    echo "== $name: not run, the ${BUDGET} s budget is spent" | tee "$OUT/$name.log"
    SUMMARY+=("$name NOT-RUN"); return
  fi
  echo "== $name (limit ${limit} s, at $(elapsed) s): $*"
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 15 "$OUT/$name.log" | sed 's/^/   /'
  SUMMARY+=("$name $(verdict "$name" "$rc" "$limit")")
}

# verdict NAME RC LIMIT: ok / no-GPU / FAILED / TIMEOUT, with pytest's counts.
verdict() {
  local name=$1 rc=$2 limit=$3 log="$OUT/$1.log" counts=""
  if [[ $name == pytest-* ]]; then
    counts=$(grep -E '^=+ .*(passed|failed|skipped|error|deselected).* in [0-9.]+s' "$log" | tail -n 1 \
             | sed -E 's/^=+ //; s/ in [0-9.]+s.*//; s/ /_/g')
  fi
  if (( rc == 124 || rc == 137 )); then
    echo "TIMEOUT(${limit}s)${counts:+:$counts}"
  elif (( rc != 0 )); then
    echo "FAILED(rc=$rc)${counts:+:$counts}"
  elif [[ $name == pytest-* ]]; then
    if [[ $counts != *passed* ]] && grep -q -E 'no NVIDIA GPU here|no usable GPU' "$log"; then
      echo "no-GPU:$counts"
    else
      echo "ok:$counts"
    fi
  elif grep -q -E 'skipped: no GPU|"gpuUsable": false' "$log"; then
    echo "no-GPU"
  else
    echo "ok"
  fi
}

setup() {
  set -o pipefail
  if ! ls "$KIT"/*.whl >/dev/null 2>&1; then
    echo "no kit in $KIT/: run \`make gpu-kit\` where a package index is reachable, and carry .gpu-kit"
    return 1
  fi
  local listed
  listed=$("$PY" tests/gpu/kit.py install-list "$KIT") || return 1
  mapfile -t wheels <<<"$listed"
  echo "installing ${#wheels[@]} wheel(s) into $SITE: ${wheels[*]##*/}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}" || return 1
  mkdir -p "$SITE/bin"
  printf '#!/bin/sh\nexec %q -m gpubatch_jobs.cli "$@"\n' "$(command -v "$PY")" >"$SITE/bin/gpubatch"
  chmod +x "$SITE/bin/gpubatch"
  nvidia-smi 2>&1 || echo "nvidia-smi: not usable here"
  KERAS_BACKEND=torch "$PY" - <<'PY'
import importlib.metadata as md
import platform

import keras
import pydantic

from gpubatch_jobs.devices import probe

names = ["pydantic", "keras", "torch", "jax", "jaxlib", "cupy-cuda13x", "numba", "numpy", "h5py", "pandas", "pyarrow",
         "matplotlib", "pytest", "typing-extensions"]
found = []
for name in names:
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        found.append(f"{name} -")
print(f"python {platform.python_version()}; keras {keras.__version__} backend {keras.backend.backend()}; "
      f"pydantic {pydantic.VERSION}")
print("versions: " + ", ".join(found))
gpus = probe()
print("GPU: " + (", ".join(f"{g.name} ({g.memory_total_bytes / 2**30:.0f} GiB)" for g in gpus.gpus)
                 if gpus.gpus else f"no GPU ({gpus.error or 'none visible'})"))
PY
}

export KIT PY SITE
export -f setup  # `timeout` runs commands, not functions: the step runs it in a child bash

echo "GPU check at $ROOT, outputs in $OUT, budget ${BUDGET} s"
step setup 90 bash -c setup
if [[ ${SUMMARY[-1]} != "setup ok" ]]; then
  SUMMARY[-1]="setup FAILED"
  line="gpu-check: setup FAILED (see setup.log); nothing else run; $(elapsed) s"
  { echo "$line"; cat "$OUT/setup.log"; } >"$OUT/summary.txt"
  echo "$line"
  exit 1
fi
GPU_LINE=$(grep -E '^GPU: ' "$OUT/setup.log" | tail -n 1)

step doctor 60 env KERAS_BACKEND=torch gpubatch doctor --json
step pytest-torch 200 env KERAS_BACKEND=torch "$PY" -m pytest -p no:cacheprovider -m gpu -rsP tests/gpu
# PYTHONSAFEPATH: `python bench/X.py` would put bench/ first on sys.path, where a file named like a
# standard module shadows it (bench/operator.py did, on 3.12, until it became operator_load.py).
step render 100 env KERAS_BACKEND=torch PYTHONSAFEPATH=1 "$PY" bench/render.py --rows seed,gpu-kernel,gpu-e2e \
  --dir "$SCRATCH/render"
step predict-torch 100 env PYTHONSAFEPATH=1 "$PY" bench/predict.py --backend torch --device gpu --windows 100000 \
  --seed-windows 8000
step pytest-jax 150 env KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -p no:cacheprovider \
  -m gpu -rsP tests/gpu/test_predict_gpu.py tests/gpu/test_train_gpu.py
step predict-jax 100 env PYTHONSAFEPATH=1 "$PY" bench/predict.py --backend jax --device gpu --windows 100000 \
  --seed-windows 8000

FAILED=0
for entry in "${SUMMARY[@]}"; do
  [[ $entry =~ (FAILED|TIMEOUT|NOT-RUN) ]] && FAILED=1
done
line="gpu-check: ${GPU_LINE#GPU: }; $(printf '%s, ' "${SUMMARY[@]}" | sed 's/, $//'); $(elapsed) s; \
$([ "$FAILED" = 0 ] && echo passed || echo FAILED)"
{
  echo "$line"
  echo
  echo "figures (from render.log and predict-*.log):"
  grep -h -E '^[0-9]+x[0-9]+$|matplotlib, seed style|GPU (kernel|end-to-end)|device gpu|^seed.s way:|^ours|max \|ours' \
    "$OUT/render.log" "$OUT/predict-torch.log" "$OUT/predict-jax.log" 2>/dev/null | sed 's/^/  /'
  echo
  echo "pytest (skips and failures):"
  grep -h -E '^(SKIPPED|FAILED|ERROR) |rows/s, mixed precision' "$OUT/pytest-torch.log" "$OUT/pytest-jax.log" \
    2>/dev/null | sed 's/^/  /'
} >"$OUT/summary.txt"
echo
cat "$OUT/summary.txt"
echo
echo "$line"
exit "$FAILED"

#!/usr/bin/env bash
# Smoke test of a job image: what the device layer sees, then one tiny job of
# each kind (RenderJob, TrainJob, then a PredictJob with the model it trained),
# each on generated data, each checked for an "ok" summary.
#
#   docker run --rm --entrypoint /opt/gpubatch/smoke/smoke.sh IMAGE [--require-gpu]
#   bash images/smoke.sh [--require-gpu]          # the same, outside an image
#
# --require-gpu: fail (exit 75) unless the GPU is usable and every job ran on it.
# SMOKE_WORKDIR: where data and outputs go (default: a fresh temporary folder).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifests=$here/smoke
[[ -d $manifests ]] || { echo "smoke: $manifests is missing" >&2; exit 2; }
require_gpu=false
case "${1:-}" in
  --require-gpu) require_gpu=true ;;
  "") ;;
  *) echo "usage: $0 [--require-gpu]" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}

work=${SMOKE_WORKDIR:-$(mktemp -d)}
mkdir -p "$work/data" "$work/out"
export MPLCONFIGDIR=${MPLCONFIGDIR:-$work/matplotlib} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

echo "== gpubatch doctor"
if $require_gpu; then
  gpubatch doctor --require-gpu
  device=gpu
else
  gpubatch doctor
  device=auto
fi

echo "== generating data in $work/data"
"$python" "$manifests/make_data.py" "$work/data"

for manifest in "$manifests"/*.yaml; do
  name=$(basename "$manifest")
  echo "== gpubatch run $name"
  summary=$(gpubatch run "$manifest" --quiet --device "$device" \
    --mount "data=$work/data" --mount "out=$work/out" | tail -n 1)
  echo "$summary"
  SUMMARY=$summary REQUIRE_GPU=$require_gpu "$python" - "$name" <<'PY'
import json, os, sys
summary = json.loads(os.environ["SUMMARY"])
name = sys.argv[1]
if summary.get("ok") is not True:
    sys.exit(f"smoke: {name}: summary is not ok")
if os.environ["REQUIRE_GPU"] == "true" and summary.get("device") != "gpu":
    sys.exit(f"smoke: {name} ran on {summary.get('device')}, not the GPU")
print(f"smoke: {name} ok on {summary.get('device')} ({summary.get('backend')})")
PY
done
echo "== smoke test passed"

#!/usr/bin/env bash
# A Python 3.12 virtualenv shaped like the device image (see tests/gpu/device-packages.txt):
# PyTorch, JAX (CPU), CuPy, numba, h5py, matplotlib, pandas, pyarrow, pytest, and no
# TensorFlow, Keras or pydantic, so `bash tests/gpu/on-device.sh` can be tried here without a GPU.
#
#   bash tests/gpu/shape-venv.sh [VENV]        # default /work/gpu-shape-venv (keep it outside the repo)
#   PATH=VENV/bin:$PATH OUT=$(mktemp -d) bash tests/gpu/on-device.sh
#
# PyPI has no CPU-only torch for Linux x86-64: its torch wheel is the CUDA build and
# does not import without its nvidia-* and cuda-toolkit wheels (about 3 GB), so they are
# installed too, as on the device; torch then runs on the CPU and reports no GPU.
# CuPy (cupy-cuda13x) imports without a GPU and fails at its first device call, as the
# GPU rows expect. Versions follow the device's `pip list` where it names them.
set -euo pipefail
VENV=${1:-/work/gpu-shape-venv}
if [ -z "${PY312:-}" ]; then  # the first Python 3.12 that runs (a pyenv shim may not)
  for candidate in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      PY312=$candidate; break
    fi
  done
fi
"${PY312:-false}" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
  || { echo "shape-venv: need Python 3.12 (set PY312=/path/to/python3.12)" >&2; exit 1; }
test -x "$VENV/bin/python" || "$PY312" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --only-binary=:all:)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "setuptools<82" wheel torch==2.11.0 "jax==0.11.2" "jaxlib==0.11.2" cupy-cuda13x==14.2.0 \
  numba h5py matplotlib pandas pyarrow pytest pytest-timeout pyyaml psutil \
  absl-py rich ml-dtypes packaging typing-extensions
# The device has none of these; the kit (make gpu-kit) brings what the project needs of them.
for name in tensorflow keras pydantic pydantic-core annotated-types typing-inspection optree namex; do
  if "$VENV/bin/python" -m pip show -q "$name" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -q -y "$name"
  fi
done
"$VENV/bin/python" - <<'PY'
import importlib.util
import sys

import jax
import torch

missing = [m for m in ("cupy", "numba", "h5py", "matplotlib", "pandas", "pyarrow", "pytest", "yaml")
           if importlib.util.find_spec(m) is None]
present = [m for m in ("tensorflow", "keras", "pydantic") if importlib.util.find_spec(m) is not None]
assert not missing and not present, f"missing {missing}, should be absent {present}"
print(f"shape-venv: Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA available: "
      f"{torch.cuda.is_available()}), jax {jax.__version__} {jax.devices()}; no tensorflow/keras/pydantic")
PY

"""TrainJob on a real GPU: the device is used, mixed precision follows the hardware, OOM halves the batch.

Each test runs `gpubatch run` in a fresh process with the Keras backend
KERAS_BACKEND names, else the one the machine has (TensorFlow where installed,
else torch, else JAX), because Keras cannot switch backends inside one process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.artifacts import METRICS_FILE, load_artifact

pytestmark = pytest.mark.gpu

BACKENDS = ("tensorflow", "torch", "jax")
BACKEND = os.environ.get("KERAS_BACKEND") if os.environ.get("KERAS_BACKEND") in BACKENDS else \
    next((name for name in BACKENDS if importlib.util.find_spec(name)), None)


def _train(folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    if BACKEND is None or importlib.util.find_spec("keras") is None or importlib.util.find_spec(BACKEND) is None:
        pytest.skip(f"keras and a backend (tensorflow, torch or jax) are needed (backend: {BACKEND})")
    manifest = folder / "train.json"
    manifest.write_text(json.dumps({"apiVersion": "gpubatch.dev/v1alpha1", "kind": "TrainJob",
                                    "metadata": {"name": "gpu-train"},
                                    "spec": {"backend": BACKEND, "device": {"policy": "gpu"}, **spec}}))
    done = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _blobs(path: Path, n: int, features: int = 8) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame["label"] = (x[:, 0] + x[:, 1] > 0).astype(int)
    frame.to_parquet(path, index=False)


def test_dnn_trains_on_the_gpu_with_precision_from_the_hardware(tmp_path: Path) -> None:
    _blobs(tmp_path / "rows.parquet", 20_000)
    summary = _train(tmp_path, {"model": {"type": "dnn", "hiddenUnits": [256, 128]}, "epochs": 3,
                                "batchSize": 512, "input": {"path": "rows.parquet"}, "output": {"path": "out"}})
    assert summary["device"] == "gpu" and summary["backend"] == BACKEND and not summary["fallbacks"]
    metrics = json.loads((tmp_path / "out" / METRICS_FILE).read_text())
    major = int(str(metrics["computeCapability"]).split(".")[0])
    assert summary["mixedPrecision"] is (major >= 7)
    assert metrics["validation"]["accuracy"] > 0.95
    print(f"dnn on {metrics['gpus']}: {summary['samplesPerSecond']:.0f} rows/s, mixed precision "
          f"{summary['mixedPrecision']}")


def test_rnn_on_the_gpu_reloads_for_inference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for doc in range(200):
        for pos in range(int(rng.integers(40, 120))):
            value = rng.normal()
            rows.append({"doc": doc, "pos": pos, "v": value, "w": rng.normal(), "label": int(value > 0)})
    pd.DataFrame(rows).to_parquet(tmp_path / "docs.parquet", index=False)
    summary = _train(tmp_path, {
        "model": {"type": "rnn", "cell": "lstm", "layers": 2, "hiddenSize": 64, "windowSize": 32},
        "epochs": 3, "batchSize": 64, "input": {"path": "docs.parquet", "idColumn": "doc", "positionColumn": "pos"},
        "output": {"path": "out"}})
    assert summary["device"] == "gpu" and summary["metrics"]["accuracy"] > 0.9
    monkeypatch.setenv("KERAS_BACKEND", BACKEND or "tensorflow")  # for a keras not yet loaded here
    model, prep = load_artifact(tmp_path / "out")
    out = np.asarray(model.predict(np.zeros((4, 32, prep.n_features), np.float32), verbose=0))
    assert out.shape == (4, 32, 2) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3)


def test_out_of_memory_halves_the_batch_and_finishes(tmp_path: Path) -> None:
    # One float32 activation of the first batch alone is 2**20 x 32768 x 4 B = 128 GiB:
    # no single GPU holds it, so fit must fail with OOM and retry at smaller sizes.
    _blobs(tmp_path / "rows.parquet", 2**20, features=4)
    summary = _train(tmp_path, {"model": {"type": "dnn", "hiddenUnits": [32768], "dropout": 0.0}, "epochs": 1,
                                "batchSize": 2**20, "validationSplit": 0.0, "mixedPrecision": "off",
                                "checkpoints": False, "input": {"path": "rows.parquet"}, "output": {"path": "out"}})
    assert summary["oomBackoffs"] >= 1 and summary["batchSize"] <= 2**19
    assert summary["epochs"] == 1
    metrics = json.loads((tmp_path / "out" / METRICS_FILE).read_text())
    assert metrics["history"]["epoch"] == [1] and metrics["history"]["batchSize"] == [summary["batchSize"]]

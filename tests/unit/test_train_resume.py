"""A TrainJob killed mid-run resumes from its last checkpoint: no epoch lost, none repeated.

`gpubatch run` runs in a real subprocess that is SIGKILLed (as a pod would be)
once the checkpoint of epoch 2 is committed; the rerun must finish with
exactly `epochs` epochs, numbered once each, and say where it resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gpubatch_jobs.artifacts import CHECKPOINT_DIR, METRICS_FILE, MODEL_FILE, load_artifact

EPOCHS = 5
MANIFEST = f"""\
apiVersion: gpubatch.dev/v1alpha1
kind: TrainJob
metadata:
  name: resume-me
spec:
  device:
    policy: cpu
  model:
    type: dnn
    hiddenUnits: [64, 64]
  epochs: {EPOCHS}
  batchSize: 16
  input:
    path: rows.parquet
  output:
    path: out/model
"""


def _write_inputs(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24_000, 16)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(16)}, "label": label}).to_parquet(folder / "rows.parquet")
    manifest = folder / "train.yaml"
    manifest.write_text(MANIFEST)
    return manifest


def _gpubatch(manifest: Path) -> list[str]:
    return [sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)]


def _committed_epoch(latest: Path) -> int:
    try:
        return int(json.loads(latest.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_after_two_epochs_resumes_without_repeating(tmp_path: Path) -> None:
    manifest = _write_inputs(tmp_path)
    out = tmp_path / "out" / "model"
    latest = out / CHECKPOINT_DIR / "latest.json"
    env = {**os.environ, "GPUBATCH_FAKE_GPU": "none", "TF_CPP_MIN_LOG_LEVEL": "3"}

    victim = subprocess.Popen(_gpubatch(manifest), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while _committed_epoch(latest) < 2:
        assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else "exited early"
        assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 3 minutes"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    killed_at = _committed_epoch(latest)
    assert 2 <= killed_at < EPOCHS, "the run finished before it could be killed; make epochs longer"
    assert not (out / MODEL_FILE).exists(), "a killed run must not leave a finished-looking model"

    rerun = subprocess.run(_gpubatch(manifest), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["epochs"] == EPOCHS
    assert summary["resumedFromEpoch"] == killed_at

    metrics = json.loads((out / METRICS_FILE).read_text())
    history = metrics["history"]
    assert history["epoch"] == list(range(1, EPOCHS + 1))
    assert all(len(values) == EPOCHS for values in history.values())
    assert metrics["epochsThisRun"] == EPOCHS - killed_at
    assert metrics["optimizerStateRestored"] is True
    # The resumed epochs continue the curve: the loss right after the restart is no worse than at epoch 1.
    assert history["loss"][killed_at] < history["loss"][0]
    model, prep = load_artifact(out)
    rows = pd.read_parquet(tmp_path / "rows.parquet").head(2000)
    predicted = model.predict(prep.transform(rows[prep.feature_columns].to_numpy()), verbose=0).argmax(axis=1)
    assert (predicted == rows["label"].to_numpy()).mean() > 0.95

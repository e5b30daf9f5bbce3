"""A TrainJob sent SIGTERM mid-epoch checkpoints the step and resumes to it, exactly.

Real `gpubatch run` subprocesses: one runs uninterrupted; another is sent
SIGTERM in the middle of an epoch, twice (the second time after resuming from
the first step checkpoint), as a pod preempted by Kueue and then evicted would
be. Each stop must exit 143 with a step-level checkpoint named in its summary;
the last run must resume from that step and end with the uninterrupted run's
weights (within 1e-6), its history, and every epoch once.
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
import pytest

from gpubatch_jobs.artifacts import CHECKPOINT_DIR, METRICS_FILE, MODEL_FILE, load_artifact
from tests.progress import steps_into_epoch

EPOCHS = 4
MANIFEST = f"""\
apiVersion: gpubatch.dev/v1alpha1
kind: TrainJob
metadata:
  name: preempt-me
spec:
  device:
    policy: cpu
  model:
    type: dnn
    hiddenUnits: [32, 32]
    dropout: 0.2
  epochs: {EPOCHS}
  batchSize: 8
  seed: 7
  input:
    path: rows.parquet
  output:
    path: OUT
"""
ENV = {**os.environ, "GPUBATCH_FAKE_GPU": "none", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _inputs(folder: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 8)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(8)}, "label": label}).to_parquet(folder / "rows.parquet")


def _manifest(folder: Path, out: str, **changes: str) -> Path:
    text = MANIFEST.replace("OUT", out)
    for old, new in changes.items():
        text = text.replace(old, new)
    path = folder / f"{out.replace('/', '-')}.yaml"
    path.write_text(text)
    return path


def _command(manifest: Path) -> list[str]:
    return [sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)]


def _latest(out: Path) -> dict:
    try:
        return json.loads((out / CHECKPOINT_DIR / "latest.json").read_text())
    except (OSError, ValueError):
        return {}


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _sigterm_mid_epoch(manifest: Path, out: Path, after_epoch: int) -> tuple[dict, float]:
    """Start a run, SIGTERM it 300 steps (20%) into the epoch after `after_epoch` (as its progress
    file reports); (summary, seconds to exit)."""
    progress = out.parent / f"progress-{after_epoch}.json"
    victim = subprocess.Popen([*_command(manifest), "--progress-file", str(progress)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while steps_into_epoch(progress, after_epoch + 1, EPOCHS) < 300:
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"not 300 steps into epoch {after_epoch + 1} within 4 minutes"
        time.sleep(0.02)
    victim.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    stdout, stderr = victim.communicate(timeout=120)
    took = time.monotonic() - sent
    assert victim.returncode == 143, stderr[-3000:]
    return _summary(stdout), took


@pytest.mark.timeout(900)
def test_sigterm_mid_epoch_resumes_to_the_step_with_equal_weights(tmp_path: Path) -> None:
    _inputs(tmp_path, rows=15000)  # 12000 training rows: 1500 steps an epoch
    whole = subprocess.run(_command(_manifest(tmp_path, "whole")), env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    manifest, out = _manifest(tmp_path, "cut"), tmp_path / "cut"
    first, took = _sigterm_mid_epoch(manifest, out, after_epoch=1)
    assert first["reason"] == "Terminated" and first["exitCode"] == 143
    checkpoint = first["checkpoint"]
    assert checkpoint["epoch"] == 1 and 0 < checkpoint["step"] < 1500, checkpoint
    assert checkpoint["place"].endswith(f"epoch-0001-step-{checkpoint['step']:06d}")
    assert _latest(out)["step"] == checkpoint["step"]
    assert took < 60, f"{took:.1f} s from SIGTERM to exit"
    assert not (out / MODEL_FILE).exists()

    # Preempted again, this time in a run that itself resumed mid-epoch.
    second, _ = _sigterm_mid_epoch(manifest, out, after_epoch=2)
    assert second["checkpoint"]["epoch"] == 2 and second["checkpoint"]["step"] > 0

    final = subprocess.run(_command(manifest), env=ENV, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = _summary(final.stdout)
    assert summary["resumedFrom"] == {"epoch": 2, "step": second["checkpoint"]["step"]}
    assert summary["epochs"] == EPOCHS

    got, want = json.loads((out / METRICS_FILE).read_text()), json.loads((tmp_path / "whole" / METRICS_FILE).read_text())
    assert got["history"]["epoch"] == list(range(1, EPOCHS + 1))
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(got["history"][key], want["history"][key], atol=1e-6, err_msg=key)
    assert got["optimizerSteps"] == want["optimizerSteps"]

    model, _ = load_artifact(out)
    reference, _ = load_artifact(tmp_path / "whole")
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_epoch_order_follows_seed_and_epoch() -> None:
    """The order each epoch trains on is a function of (seed, epoch) only."""
    from gpubatch_jobs.train.loop import epoch_order

    assert not np.array_equal(epoch_order(7, 0, 100), epoch_order(7, 1, 100))
    assert not np.array_equal(epoch_order(7, 0, 100), epoch_order(8, 0, 100))
    np.testing.assert_array_equal(epoch_order(7, 3, 100), epoch_order(7, 3, 100))

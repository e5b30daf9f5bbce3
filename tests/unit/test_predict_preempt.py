"""A PredictJob sent SIGTERM keeps the chunks it finished and the next run predicts only the rest.

Real `gpubatch run` subprocesses on a real (tiny) LSTM: one run uninterrupted,
one sent SIGTERM once two chunks are saved. The stopped run must exit 143
with a checkpoint naming the rows kept and leave no file under the output's
name; the rerun must reuse the saved chunks and write the same predictions
as the uninterrupted run.
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

from tests.unit.local import run_context
from tests.unit.test_predict_support import make_artifact, make_rows

CHUNK_ROWS = 1500
MANIFEST = """\
apiVersion: gpubatch.dev/v1alpha1
kind: PredictJob
metadata: {{name: preempt-predict}}
spec:
  device: {{policy: cpu}}
  model: {model}
  batchSize: 8
  chunkRows: {chunk_rows}
  input: {{path: {rows}}}
  output: {{path: {out}}}
"""
ENV = {**os.environ, "GPUBATCH_FAKE_GPU": "none", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _command(manifest: Path) -> list[str]:
    return [sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)]


def _manifest(tmp: Path, model: Path, rows: Path, out: str) -> Path:
    path = tmp / f"{out}.yaml"
    path.write_text(MANIFEST.format(model=model, rows=rows, out=tmp / out, chunk_rows=CHUNK_ROWS))
    return path


def test_sigterm_keeps_finished_chunks_and_the_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    model = make_artifact(tmp_path / "model")
    rows = make_rows(lengths=[300] * 60, seed=3)  # 18000 rows: 12 chunks of 1500
    source = tmp_path / "rows.parquet"
    rows.to_parquet(source, index=False)

    whole = subprocess.run(_command(_manifest(tmp_path, model, source, "whole.parquet")), env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    manifest = _manifest(tmp_path, model, source, "cut.parquet")
    kept = tmp_path / ".cut.parquet.chunks"
    victim = subprocess.Popen(_command(manifest), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(kept.glob("chunk-*.npy"))) < 2:
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no two chunks saved within 5 minutes"
        time.sleep(0.01)
    victim.send_signal(signal.SIGTERM)
    stdout, stderr = victim.communicate(timeout=120)
    assert victim.returncode == 143, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["reason"] == "Terminated"
    saved = len(list(kept.glob("chunk-*.npy")))
    assert summary["checkpoint"]["done"] == saved * CHUNK_ROWS and saved < 12
    assert summary["checkpoint"]["place"] == str(kept)
    assert not (tmp_path / "cut.parquet").exists(), "a stopped run must not leave a result under its name"

    rerun = subprocess.run(_command(manifest), env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["chunks"] == 12 and result["resumedChunks"] == saved
    assert not kept.exists(), "the kept chunks go once the result is published"

    got, want = pd.read_parquet(tmp_path / "cut.parquet"), pd.read_parquet(tmp_path / "whole.parquet")
    assert got.columns.tolist() == want.columns.tolist() and len(got) == len(rows)
    for column in want.columns:
        if want[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], want[column], atol=1e-6, err_msg=column)
        else:
            assert got[column].tolist() == want[column].tolist(), column


def test_each_kept_chunk_is_reported_as_the_checkpoint(tmp_path: Path) -> None:
    """Like a TrainJob's epoch, each saved chunk reaches the progress sinks at once (status.checkpoint
    in a pod), whatever the progress interval: what a restart would keep, growing by a chunk."""
    from gpubatch_jobs.predict import run
    from gpubatch_jobs.spec.kinds import PredictJobSpec

    model = make_artifact(tmp_path / "model")
    make_rows(lengths=[300] * 20, seed=3).to_parquet(tmp_path / "rows.parquet", index=False)  # 4 chunks
    events: list[dict] = []
    body = {"model": str(model), "batchSize": 8, "chunkRows": CHUNK_ROWS, "device": {"policy": "cpu"},
            "input": {"path": str(tmp_path / "rows.parquet")}, "output": {"path": str(tmp_path / "out.parquet")}}
    spec = PredictJobSpec.model_validate(body)
    summary = run(spec, run_context(spec, base_dir=tmp_path, progress_sinks=[events.append], progress_interval_s=3600))
    assert summary["chunks"] == 4
    kept = [e["checkpoint"]["done"] for e in events if "checkpoint" in e]
    assert kept == [CHUNK_ROWS, 2 * CHUNK_ROWS, 3 * CHUNK_ROWS, 4 * CHUNK_ROWS], events
    assert all(e["checkpoint"]["place"].endswith(".out.parquet.chunks") for e in events if "checkpoint" in e)

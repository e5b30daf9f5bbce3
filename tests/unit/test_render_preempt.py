"""A RenderJob sent SIGTERM mid-shard keeps the images it finished and the next run continues after them.

A real `gpubatch run` subprocess is sent SIGTERM once its progress bar shows
images done; it must exit 143 with a checkpoint naming them and no file under
the output's name, and the rerun must resume at that image and end with the
same file an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np

MANIFEST = """\
apiVersion: gpubatch.dev/v1alpha1
kind: RenderJob
metadata: {{name: preempt-render}}
spec:
  device: {{policy: cpu}}
  input: {{path: series.h5, dataset: close}}
  output: {{path: {out}}}
  seqLen: 30
  stride: 1
  width: 240
  height: 180
  batchSize: 16
  previewImages: 0
"""
ENV = {**os.environ, "GPUBATCH_FAKE_GPU": "none", "CUDA_VISIBLE_DEVICES": ""}
SERIES = 20000
PROGRESS = re.compile(r"\] (\d+)/(\d+) ")


def _run_until(manifest: Path, at_least: int) -> tuple[subprocess.Popen, int]:
    """Start `gpubatch run` and SIGTERM it once its progress bar shows `at_least` images; (process, shown)."""
    proc = subprocess.Popen([sys.executable, "-m", "gpubatch_jobs.cli", "run", str(manifest)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {"done": 0, "total": 0}
    stderr: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        buffer = ""
        while chunk := proc.stderr.read(1):
            buffer += chunk
            stderr.append(chunk)
            if chunk == "\r" or chunk == "\n":
                found = PROGRESS.findall(buffer)
                if found:
                    seen["done"], seen["total"] = map(int, found[-1])
                buffer = ""

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while seen["done"] < at_least:
        assert proc.poll() is None, "".join(stderr)[-3000:]
        assert time.monotonic() < deadline, "no progress within 5 minutes"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    assert seen["done"] < seen["total"], "the run finished before the signal; give it more images"
    return proc, seen["done"]


def test_sigterm_mid_shard_resumes_after_the_finished_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with h5py.File(tmp_path / "series.h5", "w") as f:
        # Enough images that the signal lands mid-run on a fast, idle machine too (the
        # progress bar is redrawn a few times a second, not per batch).
        f["close"] = 50 + np.cumsum(rng.standard_normal(SERIES))
    whole_manifest = tmp_path / "whole.yaml"
    whole_manifest.write_text(MANIFEST.format(out="whole.h5"))
    whole = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(whole_manifest)], env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    manifest = tmp_path / "cut.yaml"
    manifest.write_text(MANIFEST.format(out="cut.h5"))
    proc, shown = _run_until(manifest, at_least=200)
    assert proc.returncode == 143
    assert proc.stdout is not None
    summary = json.loads(proc.stdout.read().strip().splitlines()[-1])
    assert summary["reason"] == "Terminated"
    kept = summary["checkpoint"]["done"]
    assert shown <= kept < SERIES - 30 + 1 and summary["checkpoint"]["place"].endswith(".cut.h5.partial")
    assert not (tmp_path / "cut.h5").exists()
    with h5py.File(tmp_path / ".cut.h5.partial", "r") as f:
        assert int(f.attrs["done"]) == kept

    rerun = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)], env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["resumedFrom"] == kept and result["rendered"] == result["images"] - kept
    with h5py.File(tmp_path / "cut.h5", "r") as got, h5py.File(tmp_path / "whole.h5", "r") as want:
        assert np.array_equal(got["index"][()], want["index"][()])
        assert np.array_equal(got["images"][()], want["images"][()])

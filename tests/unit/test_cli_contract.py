"""What every `gpubatch run` exit looks like: the summary JSON is the last stdout line, even on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def gpubatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPUBATCH_DEVICE", "GPUBATCH_FAKE_GPU")}
    return subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def last_json(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert lines, "nothing on stdout: the summary JSON must be the last line"
    return json.loads(lines[-1])


def test_unreadable_manifest_ends_with_the_summary_json(tmp_path: Path) -> None:
    result = gpubatch("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    summary = last_json(result.stdout)
    assert summary["reason"] == "BadSpec" and "nope.yaml" in summary["message"]


@pytest.mark.parametrize(("written", "meant"), [("Trainjob", "TrainJob"), ("PredictJobs", "PredictJob"),
                                                ("renderjob", "RenderJob")])
def test_kind_typo_names_the_field_and_the_likely_kind(tmp_path: Path, written: str, meant: str) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(f"apiVersion: gpubatch.dev/v1alpha1\nkind: {written}\nmetadata: {{name: r}}\nspec: {{}}\n")
    result = gpubatch("run", str(manifest))
    assert result.returncode == 1
    message = last_json(result.stdout)["message"]
    assert f"kind: {written!r} is not one of RenderJob, TrainJob, PredictJob; did you mean {meant}?" in message
    assert "found 0" not in message


def test_a_file_without_any_kind_says_so(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    result = gpubatch("run", str(manifest))
    assert result.returncode == 1
    message = last_json(result.stdout)["message"]
    assert "kind: 'ConfigMap' is not one of RenderJob, TrainJob, PredictJob" in message


def test_bad_shard_flag_ends_with_the_summary_json(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text("apiVersion: gpubatch.dev/v1alpha1\nkind: RenderJob\nmetadata: {name: r}\n"
                        "spec: {input: {path: x.h5}, output: {path: y.h5}}\n")
    result = gpubatch("run", str(manifest), "--shard", "0/2")
    assert result.returncode == 1
    assert "--shard 0/2" in last_json(result.stdout)["message"]


def test_an_unexpected_engine_error_still_ends_with_the_summary_json(tmp_path: Path) -> None:
    """A RenderJob writing under /proc: h5py fails in a way no engine classifies (a retryable exit)."""
    import numpy as np

    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((10, 120)))
    manifest = tmp_path / "job.yaml"
    manifest.write_text("apiVersion: gpubatch.dev/v1alpha1\nkind: RenderJob\nmetadata: {name: r}\n"
                        "spec: {input: {path: s.npy}, output: {path: /proc/gpubatch-test.h5}}\n")
    result = gpubatch("run", "-q", str(manifest))
    assert result.returncode == 2
    summary = last_json(result.stdout)
    assert summary["kind"] == "RenderJob" and summary["ok"] is False
    assert summary["reason"] == "UnexpectedError" and summary["exitCode"] == 2
    assert "gpubatch-test.h5" in summary["message"] and "Traceback" in result.stderr

"""Logs that outlive pods: `gpubatch-job` in a subprocess, as the pod runs it, keeps its log beside
the output (gpubatch_jobs.podlog) while its stdout and stderr still reach the container's streams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from gpubatch_jobs import contract
from gpubatch_jobs.podlog import PodLog

SPEC = {"input": {"path": "series.npy"}, "output": {"path": "out/charts.h5"}, "seqLen": 10, "width": 16,
        "height": 16, "previewImages": 0}


def run_pod(tmp_path: Path, spec: dict, pod: str) -> subprocess.CompletedProcess[str]:
    np.save(tmp_path / "series.npy", np.sin(np.arange(200) / 7.0))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "GPUBATCH_SPEC": json.dumps(spec), "GPUBATCH_TERMINATION_LOG": str(tmp_path / "termination-log"),
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "GPUBATCH_DEVICE": "cpu", "POD_NAME": pod,
           "GPUBATCH_PVC_ROOT": str(tmp_path / "pvc")}
    return subprocess.run([sys.executable, "-m", "gpubatch_jobs.entrypoint", "render"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_pod_keeps_its_log_beside_the_output_and_still_prints_it(tmp_path: Path) -> None:
    spec = {**SPEC, "output": {"path": "pvc://data/out/charts.h5"}, "input": {"path": "pvc://data/series.npy"}}
    (tmp_path / "pvc" / "data").mkdir(parents=True)
    np.save(tmp_path / "pvc" / "data" / "series.npy", np.sin(np.arange(200) / 7.0))
    done = run_pod(tmp_path, spec, "x-render-abc12")
    assert done.returncode == 0, done.stderr
    kept = tmp_path / "pvc" / "data" / "out" / "charts.h5.logs" / "x-render-abc12.log"
    text = kept.read_text()
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # the container's stdout is unchanged
    assert summary["ok"] is True
    assert json.dumps(summary, sort_keys=True, default=str) in text  # stdout kept
    assert "progress" in text and "progress" in done.stderr  # stderr kept and still on stderr
    assert not [p for p in kept.parent.iterdir() if ".partial" in p.name]  # complete files only


def test_a_pod_with_a_local_output_path_keeps_no_log_anywhere(tmp_path: Path) -> None:
    """A job pod is confined to claims and buckets: a local output path is refused, and its log is
    not written beside it either."""
    done = run_pod(tmp_path, SPEC, "x-render-local")
    assert done.returncode == contract.EXIT_BAD_INPUT
    assert "spec.output.path" in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_attempt_keeps_its_own_log_on_the_claim(tmp_path: Path) -> None:
    spec = {**SPEC, "output": {"path": "pvc://data/out/charts.h5"}, "input": {"path": "pvc://data/series.npy"}}
    (tmp_path / "pvc" / "data").mkdir(parents=True)
    np.save(tmp_path / "pvc" / "data" / "series.npy", np.sin(np.arange(200) / 7.0))
    missing = {**spec, "input": {"path": "pvc://data/missing.npy"}}
    failed = run_pod(tmp_path, missing, "x-render-first")  # bad input: exit 1
    assert failed.returncode == contract.EXIT_BAD_INPUT
    assert run_pod(tmp_path, spec, "x-render-cpu-second").returncode == 0
    folder = tmp_path / "pvc" / "data" / "out" / "charts.h5.logs"
    assert sorted(p.name for p in folder.iterdir()) == ["x-render-cpu-second.log", "x-render-first.log"]
    assert "missing.npy" in (folder / "x-render-first.log").read_text()  # the failed attempt's words are kept
    assert contract.log_folder("pvc://data/out/charts.h5") == "pvc://data/out/charts.h5.logs"


def test_only_the_last_mebibyte_is_kept(tmp_path: Path) -> None:
    keeper = PodLog("p", limit=1000)
    keeper.keep_beside(str(tmp_path / "out.h5"), pvc_root=None, base_dir=tmp_path)
    for i in range(100):
        keeper.append(f"line {i:04d} ".encode() * 4 + b"\n")
    keeper.write()
    text = (tmp_path / "out.h5.logs" / "p.log").read_bytes()
    assert text.startswith(b"(gpubatch: earlier output dropped")
    assert text.endswith(b"line 0099 " * 4 + b"\n") and b"line 0000" not in text
    assert len(text.split(b"\n", 1)[1]) == 1000
    assert contract.LOG_LIMIT == 1 << 20

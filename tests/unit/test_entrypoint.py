"""`gpubatch-job KIND` in a subprocess, as the pod runs it: it obeys the operator's instruction
and ends with one of the contract's exit codes whatever happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from gpubatch_jobs import contract

SPEC = {"input": {"path": "series.npy"}, "output": {"path": "out/charts.h5"}, "seqLen": 10, "width": 16,
        "height": 16, "previewImages": 0}


def pod(tmp_path: Path, spec: dict | None = None, **env: str) -> tuple[int, dict]:
    np.save(tmp_path / "series.npy", np.sin(np.arange(200) / 7.0))
    log = tmp_path / "termination-log"
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "GPUBATCH_SPEC": json.dumps(spec or SPEC), "GPUBATCH_TERMINATION_LOG": str(log),
            "MPLCONFIGDIR": str(tmp_path / "mpl"), **env}
    done = subprocess.run([sys.executable, "-m", "gpubatch_jobs.entrypoint", "render"], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, json.loads(log.read_text()) if log.exists() else {}


def test_the_pod_runs_on_the_device_it_is_told(tmp_path: Path) -> None:
    code, summary = pod(tmp_path, {**SPEC, "device": {"policy": "gpu"}}, GPUBATCH_DEVICE="cpu",
                        GPUBATCH_FAKE_GPU="ok:1")
    assert code == contract.EXIT_OK and summary["device"] == "cpu"  # the policy in the spec is not the pod's


def test_told_gpu_with_a_broken_gpu_the_pod_exits_75(tmp_path: Path) -> None:
    code, summary = pod(tmp_path, GPUBATCH_DEVICE="gpu", GPUBATCH_ON_GPU_FAILURE="exit", GPUBATCH_FAKE_GPU="broken")
    assert code == contract.EXIT_GPU_UNUSABLE and summary["exitCode"] == 75


def test_without_an_instruction_the_pod_refuses_naming_the_variable(tmp_path: Path) -> None:
    code, summary = pod(tmp_path)
    assert code == contract.EXIT_BAD_INPUT and "GPUBATCH_DEVICE" in summary["message"]


def test_a_policy_where_a_device_belongs_is_refused(tmp_path: Path) -> None:
    code, summary = pod(tmp_path, GPUBATCH_DEVICE="auto")
    assert code == contract.EXIT_BAD_INPUT and "GPUBATCH_DEVICE='auto'" in summary["message"]

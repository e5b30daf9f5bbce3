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

# A pod reads and writes claims only: pvc://data is the folder DATA under GPUBATCH_PVC_ROOT (tmp_path).
SPEC = {"input": {"path": "pvc://data/series.npy"}, "output": {"path": "pvc://data/out/charts.h5"}, "seqLen": 10,
        "width": 16, "height": 16, "previewImages": 0}
DATA = "data"


def pod(tmp_path: Path, spec: dict | None = None, **env: str) -> tuple[int, dict]:
    (tmp_path / DATA).mkdir(exist_ok=True)
    np.save(tmp_path / DATA / "series.npy", np.sin(np.arange(200) / 7.0))
    log = tmp_path / "termination-log"
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "GPUBATCH_SPEC": json.dumps(spec or SPEC), "GPUBATCH_TERMINATION_LOG": str(log),
            "GPUBATCH_PVC_ROOT": str(tmp_path),
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


def test_sigterm_stops_the_pod_with_143_and_the_next_pod_resumes(tmp_path: Path) -> None:
    """A deleted pod gets SIGTERM: the engine stops at once (exit 143, partial output kept
    consistent) and the Job's next pod resumes to exactly N images."""
    import signal
    import time

    import h5py

    windows, seq_len = 40_000, 512
    (tmp_path / DATA).mkdir(exist_ok=True)
    np.save(tmp_path / DATA / "series.npy", np.cumsum(np.random.default_rng(5).normal(size=windows + seq_len - 1)))
    spec = {**SPEC, "seqLen": seq_len, "batchSize": 1024}
    log = tmp_path / "termination-log"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "GPUBATCH_SPEC": json.dumps(spec), "GPUBATCH_TERMINATION_LOG": str(log),
           "GPUBATCH_PVC_ROOT": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl"), "GPUBATCH_DEVICE": "cpu"}
    first = subprocess.Popen([sys.executable, "-m", "gpubatch_jobs.entrypoint", "render"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    for line in first.stderr:  # the first batch is on disk once progress past 0 is reported
        if "progress" in line and "'done': 0," not in line:
            break
    first.send_signal(signal.SIGTERM)
    started = time.monotonic()
    first.communicate(timeout=60)
    assert first.returncode == contract.EXIT_TERMINATED, first.returncode
    assert time.monotonic() - started < 30
    assert json.loads(log.read_text())["reason"] == "Terminated"
    assert not (tmp_path / DATA / "out" / "charts.h5").exists()  # nothing under the final name yet

    code, summary = pod_again(tmp_path, env)
    assert code == contract.EXIT_OK, summary
    assert 0 < summary["resumedFrom"] < windows and summary["images"] == windows
    with h5py.File(tmp_path / DATA / "out" / "charts.h5") as h5:
        assert np.array_equal(np.sort(h5["index"][:]), np.arange(windows))


def pod_again(tmp_path: Path, env: dict[str, str]) -> tuple[int, dict]:
    log = tmp_path / "termination-log"
    done = subprocess.run([sys.executable, "-m", "gpubatch_jobs.entrypoint", "render"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, json.loads(log.read_text())


SECRET = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-CONTENT-" + "x" * 900


def test_in_a_pod_a_local_path_is_refused_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET)
    code, summary = pod(tmp_path, {**SPEC, "input": {"path": str(tmp_path / "token")}}, GPUBATCH_DEVICE="cpu")
    assert code == contract.EXIT_BAD_INPUT, summary
    assert "spec.input.path" in summary["message"] and "pvc://" in summary["message"]
    assert "SECRET-TOKEN" not in json.dumps(summary)


def test_in_a_pod_a_symlink_out_of_the_claim_is_refused_and_nothing_of_the_file_leaks(tmp_path: Path) -> None:
    """pvc://data/link.csv, where link.csv points at a file outside the claim (a token, /proc/self/environ)."""
    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "token").write_text(SECRET)
    (tmp_path / DATA).mkdir()
    (tmp_path / DATA / "link.csv").symlink_to(outside / "token")
    (tmp_path / DATA / "deeper").symlink_to(outside, target_is_directory=True)
    for path in ("pvc://data/link.csv", "pvc://data/deeper/token"):
        code, summary = pod(tmp_path, {**SPEC, "input": {"path": path, "format": "csv", "column": "x"}},
                            GPUBATCH_DEVICE="cpu")
        assert code == contract.EXIT_BAD_INPUT, summary
        assert "outside its claim" in summary["message"] and "spec.input.path" in summary["message"]
        assert "SECRET-TOKEN" not in json.dumps(summary) and "secrets" not in summary["message"]


def test_a_file_on_the_claim_that_is_not_data_leaks_only_a_short_excerpt(tmp_path: Path) -> None:
    """A CSV whose single 'column' is a token: the reader's error names the columns, as an excerpt."""
    (tmp_path / DATA).mkdir()
    (tmp_path / DATA / "token.csv").write_text(SECRET + "\n1\n")
    code, summary = pod(tmp_path, {**SPEC, "input": {"path": "pvc://data/token.csv", "column": "x"}},
                        GPUBATCH_DEVICE="cpu")
    assert code == contract.EXIT_BAD_INPUT, summary
    assert "x" * 100 not in json.dumps(summary) and len(summary["message"]) <= 600

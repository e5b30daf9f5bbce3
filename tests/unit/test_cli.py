"""The command line as users meet it: doctor's exit codes, run's errors, cheap imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def gpubatch(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("GPUBATCH_DEVICE", "GPUBATCH_FAKE_GPU")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


def test_doctor_json_reports_no_gpu_and_exits_0_here() -> None:
    result = gpubatch("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["gpuUsable"] is False and report["device"] == "cpu"
    assert report["driver"]["gpus"] == []
    cpu = next(f for f in report["frameworks"] if f["framework"] == "cpu")
    assert cpu["matmul"]["ok"] and cpu["trainStep"]["ok"]


def test_doctor_require_gpu_exits_75_and_says_how_to_fix() -> None:
    result = gpubatch("doctor", "--require-gpu")
    assert result.returncode == 75
    for hint in ("driver", "nvidia.com/gpu", "CUDA_VISIBLE_DEVICES", "cupy-cuda12x"):
        assert hint in result.stdout


def test_doctor_gpu_policy_from_environment_exits_75() -> None:
    assert gpubatch("doctor", "--json", env={"GPUBATCH_DEVICE": "gpu"}).returncode == 75


def test_doctor_with_a_broken_gpu_names_the_failure() -> None:
    result = gpubatch("doctor", "--json", "--require-gpu", env={"GPUBATCH_FAKE_GPU": "broken"})
    assert result.returncode == 75
    report = json.loads(result.stdout)
    assert report["driver"]["gpus"] and not report["gpuUsable"]
    tf = next(f for f in report["frameworks"] if f["framework"] == "tensorflow")
    assert "faked by GPUBATCH_FAKE_GPU" in tf["error"]


def test_run_with_a_bad_manifest_exits_1_naming_the_field(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: gpubatch.dev/v1alpha1\nkind: RenderJob\nmetadata: {name: r}\n"
        "spec: {input: {path: x.h5}, output: {path: y.h5}, device: {gpus: 0}}\n"
    )
    result = gpubatch("run", str(manifest))
    assert result.returncode == 1
    assert "spec.device.gpus: must be >= 1 (got 0)" in result.stderr
    # ... and stdout still ends with the summary JSON (tests/unit/test_cli_contract.py)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is False and summary["reason"] == "BadSpec" and summary["exitCode"] == 1
    assert "spec.device.gpus: must be >= 1 (got 0)" in summary["message"]
    assert summary["kind"] == "RenderJob"


def test_run_with_a_missing_file_names_it(tmp_path: Path) -> None:
    result = gpubatch("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "nope.yaml" in result.stderr and "cannot read" in result.stderr


@pytest.mark.parametrize("bad", ["data", "=dir", "data="])
def test_bad_mount_flag_is_explained(tmp_path: Path, bad: str) -> None:
    result = gpubatch("run", str(tmp_path / "x.yaml"), "--mount", bad)
    assert result.returncode == 2 and "CLAIM=DIR" in result.stderr


def test_pvc_path_without_mount_is_a_clear_error() -> None:
    from gpubatch_jobs.errors import BadInput
    from gpubatch_jobs.runtime import RunContext

    ctx = RunContext(mounts={"data": Path("/tmp/data")})
    assert ctx.resolve("pvc://data/a/b.h5") == Path("/tmp/data/a/b.h5")
    with pytest.raises(BadInput, match="--mount models=./some/folder"):
        ctx.resolve("pvc://models/m", field_name="spec.model")


def test_entrypoint_rejects_a_bad_spec_with_exit_1(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items()}
    env.update({"GPUBATCH_SPEC": json.dumps({"input": {"path": "x"}, "output": {"path": "y"}, "seqLen": 1}),
                "GPUBATCH_TERMINATION_LOG": str(log)})
    result = subprocess.run([sys.executable, "-m", "gpubatch_jobs.entrypoint", "render"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "spec.seqLen: must be >= 2" in result.stderr
    assert json.loads(log.read_text())["reason"] == "BadSpec"


def test_crds_check_from_the_command_line() -> None:
    root = Path(__file__).resolve().parents[2]
    assert gpubatch("crds", "--check", cwd=root).returncode == 0


@pytest.mark.parametrize("package", ["gpubatch_jobs", "gpubatch_jobs.spec", "gpubatch_jobs.cli", "gpubatch_jobs.devices",
                                     "gpubatch_jobs.entrypoint", "gpubatch_operator"])
def test_importing_loads_no_heavy_framework(package: str) -> None:
    heavy = ["tensorflow", "torch", "jax", "cupy", "pyspark", "matplotlib", "keras"]
    code = f"import sys, {package}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

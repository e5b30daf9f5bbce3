"""`Client(local=True)`: the same manifest through `gpubatch run`, handled like a cluster job
(submit -> wait -> status, result, logs), so a notebook moves to the cluster by one argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gpubatch import Client, RenderJob, SpecError
from gpubatch_jobs.client import exit_code_of, result_of, split_name

MANIFEST = {"apiVersion": "gpubatch.dev/v1alpha1", "kind": "RenderJob", "metadata": {"name": "local-r"},
            "spec": {"input": {"path": "data/series.npy"}, "output": {"path": "out/charts.h5"}, "seqLen": 10,
                     "width": 16, "height": 16, "previewImages": 0, "device": {"policy": "cpu"}}}


@pytest.fixture(autouse=True)
def _local_jobs_in_the_tests_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local job keeps its log and manifest in a temporary folder that outlives it (so the log
    can be read after): here that folder is under the test's own, which pytest removes."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "series.npy", np.sin(np.arange(3000) / 7.0))
    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump(MANIFEST))
    return path


def test_a_yaml_path_runs_like_gpubatch_run(manifest: Path, tmp_path: Path) -> None:
    events: list[dict] = []
    job = Client(local=True).submit(manifest)
    summary = job.wait(timeout=300, on_progress=events.append)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    (tmp_path / "out" / "charts.h5").unlink()
    by_hand = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", str(manifest), "-q"],
                             capture_output=True, text=True, env=env, timeout=300)
    expected = json.loads(by_hand.stdout.strip().splitlines()[-1])
    def stable(s: dict) -> dict:  # timings differ from run to run; every other field must not
        return {k: v for k, v in s.items() if not isinstance(v, float | dict)}

    assert summary.keys() == expected.keys() and stable(summary) == stable(expected)
    assert summary["ok"] is True and job.exit_code == 0 == by_hand.returncode
    assert job.status["phase"] == "Succeeded" and job.result == summary
    assert events[-1]["phase"] == "Succeeded" and events[-1]["percent"] == 100
    assert json.dumps(summary, sort_keys=True, default=str) in str(job.logs())
    assert (tmp_path / "out" / "charts.h5").exists()


def test_a_model_object_keeps_paths_relative_to_the_working_folder(manifest: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = RenderJob.model_validate({**MANIFEST, "metadata": {"name": "from-python"}})
    job = Client(local=True).submit(spec)
    lines = list(job.logs(follow=True))  # follows the run to its end
    assert job.exit_code == 0 and json.loads(lines[-1])["ok"] is True
    assert (tmp_path / "out" / "charts.h5").exists()


def test_a_failure_has_the_run_s_exit_code_and_summary(manifest: Path, tmp_path: Path) -> None:
    bad = yaml.safe_load(manifest.read_text())
    bad["spec"]["input"]["path"] = "data/missing.npy"
    summary = Client(local=True).submit(bad).wait(timeout=300)
    assert summary["ok"] is False and summary["exitCode"] == 1 and "missing.npy" in summary["message"]


def test_a_bad_manifest_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec.device.gpus: must be >= 1"):
        Client(local=True).submit({**MANIFEST, "spec": {**MANIFEST["spec"], "device": {"gpus": 0}}})


def test_result_and_exit_code_follow_the_status() -> None:
    assert result_of({"phase": "Running"}) is None
    failed = {"phase": "Failed", "message": "the GPU pod exited 75", "conditions": [
        {"type": "Failed", "status": "True", "reason": "GpuUnusable"}]}
    assert result_of(failed, "RenderJob") == {"kind": "RenderJob", "ok": False, "exitCode": 75,
                                              "reason": "GpuUnusable", "message": "the GPU pod exited 75"}
    assert exit_code_of(failed) == 75
    assert exit_code_of({"phase": "Failed", "result": {"ok": False, "exitCode": 1}}) == 1
    assert exit_code_of({"phase": "Succeeded", "result": {"ok": True}}) == 0
    assert split_name("rj/x") == ("RenderJob", "x") and split_name("trainjobs/y") == ("TrainJob", "y")
    assert split_name("z", "predictjob") == ("PredictJob", "z") and split_name("w") == (None, "w")


def test_the_package_exposes_the_client_and_a_kubectl_plugin() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["kubectl-gpubatch"] == "gpubatch_jobs.cli:kubectl_main"
    assert "gpubatch" in tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    done = subprocess.run([sys.executable, "-c", "import sys; from gpubatch_jobs.cli import kubectl_main; "
                           "sys.argv = ['kubectl-gpubatch', 'submit', '--help']; kubectl_main()"],
                          capture_output=True, text=True, timeout=60)
    assert "usage: kubectl gpubatch submit" in done.stdout


def test_the_reader_pod_s_output_is_split_per_pod(tmp_path: Path) -> None:
    """The reader script (run here with this Python, as the reader pod runs it) and its parser."""
    from gpubatch_jobs.client import READER_SCRIPT, GpubatchClientError, parse_reader_output

    folder = tmp_path / "charts.h5.logs"
    folder.mkdir()
    (folder / "x-render-abc.log").write_text("first line\n==> not a marker <==\nlast, no newline")
    (folder / "x-render-cpu-def.log").write_text("cpu attempt\n")
    (folder / ".x.log.partial-1").write_text("never complete")
    os.utime(folder / "x-render-abc.log", (1, 1))  # the older attempt comes first
    out = subprocess.run([sys.executable, "-c", READER_SCRIPT, str(folder)], capture_output=True, text=True,
                         check=True).stdout
    assert parse_reader_output(out) == {"x-render-abc": "first line\n==> not a marker <==\nlast, no newline",
                                        "x-render-cpu-def": "cpu attempt\n"}
    assert list(parse_reader_output(out)) == ["x-render-abc", "x-render-cpu-def"]
    empty = subprocess.run([sys.executable, "-c", READER_SCRIPT, str(tmp_path / "none")], capture_output=True,
                           text=True, check=True).stdout
    assert parse_reader_output(empty) == {}
    with pytest.raises(GpubatchClientError, match="incomplete"):
        parse_reader_output(out.replace("==> gpubatch-done <==", ""))

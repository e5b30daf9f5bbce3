"""TrainJob `workers: N`: real worker processes talking gRPC on loopback (TensorFlow's own
MultiWorkerMirroredStrategy), started by `gpubatch run --workers N` exactly as the operator's
Indexed Job starts pods (GPUBATCH_WORKER_HOSTS + JOB_COMPLETION_INDEX).

- correctness: two workers and one worker, same spec (global batch, seed), take the same number
  of optimizer steps and end with validation accuracy within 0.01; both loss curves are drawn
  into one training-curves PNG;
- gang failure: worker 1 SIGKILLed mid-epoch -> the whole group restarts from worker 0's last
  checkpoint and the history has exactly `epochs` epochs, each once;
- the rules: torch with workers > 1 and a global batch that does not split are refused, naming
  the field; a worker without its group's addresses is refused.
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

from gpubatch_jobs.artifacts import CHECKPOINT_DIR, CURVES_FILE, METRICS_FILE, MODEL_FILE
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.spec import SpecError, load_manifest
from gpubatch_jobs.train.distributed import WorkerGroup
from tests.progress import steps_into_epoch

REPO = Path(__file__).resolve().parents[2]


def manifest(folder: Path, out: str, epochs: int, rows: int = 3000, extra: str = "") -> Path:
    if not (folder / "rows.parquet").exists():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, 12)).astype(np.float32)
        label = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] > 0).astype(int)
        pd.DataFrame({**{f"f{i}": x[:, i] for i in range(12)}, "label": label}).to_parquet(folder / "rows.parquet")
    path = folder / f"{out}.yaml"
    path.write_text(f"""\
apiVersion: gpubatch.dev/v1alpha1
kind: TrainJob
metadata:
  name: {out}
spec:
  device: {{policy: cpu}}
  model: {{type: dnn, hiddenUnits: [32]}}
  epochs: {epochs}
  batchSize: 64
  seed: 3
  input: {{path: rows.parquet}}
  output: {{path: out/{out}}}
{extra}""")
    return path


def env() -> dict[str, str]:
    paths = [str(REPO / "jobs"), str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "GPUBATCH_FAKE_GPU": "none", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def gpubatch(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(path), *extra]


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_workers_match_one_worker(tmp_path: Path) -> None:
    from gpubatch_jobs.train.publish import plot_curves

    one = subprocess.run(gpubatch(manifest(tmp_path, "w1", epochs=3)), env=env(), capture_output=True,
                         text=True, timeout=600)
    two = subprocess.run(gpubatch(manifest(tmp_path, "w2", epochs=3), "--workers", "2"), env=env(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    s1, s2 = summary_of(one), summary_of(two)
    assert s2["workers"]["total"] == 2 and s2["workers"]["engine"] == "tf.distribute.MultiWorkerMirroredStrategy"
    assert s2["batchSize"] == s1["batchSize"] == 64 and s2["perWorkerBatchSize"] == 32
    assert s2["workers"]["groupRestarts"] == 0
    m1 = json.loads((tmp_path / "out/w1" / METRICS_FILE).read_text())
    m2 = json.loads((tmp_path / "out/w2" / METRICS_FILE).read_text())
    # Same number of optimizer updates: the global batch is split, not multiplied.
    assert m1["optimizerSteps"] == m2["optimizerSteps"] == 3 * int(np.ceil(2400 / 64))
    assert m1["history"]["epoch"] == m2["history"]["epoch"] == [1, 2, 3]
    assert abs(s1["metrics"]["accuracy"] - s2["metrics"]["accuracy"]) <= 0.01, (s1["metrics"], s2["metrics"])
    assert abs(m1["history"]["val_accuracy"][-1] - m2["history"]["val_accuracy"][-1]) <= 0.01
    assert s2["metrics"]["accuracy"] > 0.75  # it learnt something
    # Only worker 0 published: one model, one curves file.
    assert (tmp_path / "out/w2" / MODEL_FILE).is_file() and (tmp_path / "out/w2" / CURVES_FILE).is_file()
    # Both loss curves in one training-curves PNG.
    png = tmp_path / "out/w2" / "training_curves.workers-2-vs-1.png"
    figure = plot_curves(m2["history"], png, "workers: 2 vs workers: 1", overlays={"workers: 1": m1["history"]})
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert "loss" in labels and "loss (workers: 1)" in labels
    assert png.stat().st_size > 10_000


def _committed_epoch(latest: Path) -> int:
    try:
        return int(json.loads(latest.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _worker(parent: int, index: int) -> int | None:
    """The pid of the supervisor's child that is worker `index` (its JOB_COMPLETION_INDEX)."""
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            stat = (task / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            environ = (task / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if f"JOB_COMPLETION_INDEX={index}".encode() in environ:
            return int(task.name)
    return None


@pytest.mark.slow
def test_killed_worker_restarts_the_group_from_the_last_checkpoint(tmp_path: Path) -> None:
    epochs = 4
    path = manifest(tmp_path, "gang", epochs=epochs, rows=6000, extra="  backoffLimit: 2\n")
    latest = tmp_path / "out/gang" / CHECKPOINT_DIR / "latest.json"
    group = subprocess.Popen(gpubatch(path, "--workers", "2"), env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while _committed_epoch(latest) < 1:
        assert group.poll() is None, group.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint of epoch 1 in time"
        time.sleep(0.05)
    killed_after = _committed_epoch(latest)
    assert killed_after < epochs, "training ended before the kill: make the epochs longer"
    victim = _worker(group.pid, 1)
    assert victim is not None, "worker 1 not found among the supervisor's children"
    os.kill(victim, signal.SIGKILL)  # mid-epoch: the checkpoint of the epoch before is the last one
    out, err = group.communicate(timeout=600)
    assert group.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["workers"]["groupRestarts"] == 1, summary["workers"]
    first, second = summary["workers"]["attempts"]
    assert first["failedWorker"] in (0, 1) and first["exitCode"] != 0 and second["exitCode"] == 0
    assert "restarting the group of 2" in err
    assert summary["resumedFromEpoch"] >= killed_after >= 1
    metrics = json.loads((tmp_path / "out/gang" / METRICS_FILE).read_text())
    assert metrics["history"]["epoch"] == list(range(1, epochs + 1))
    assert len(metrics["history"]["loss"]) == epochs
    assert metrics["epochs"] == epochs


def test_torch_with_workers_is_refused(tmp_path: Path) -> None:
    path = manifest(tmp_path, "torch", epochs=1, extra="  workers: 2\n  backend: torch\n")
    with pytest.raises(SpecError) as err:
        load_manifest(path)
    assert "workers: 2 needs backend tensorflow or jax" in str(err.value)


def test_global_batch_must_split_across_workers(tmp_path: Path) -> None:
    path = manifest(tmp_path, "odd", epochs=1, extra="  workers: 3\n")
    with pytest.raises(SpecError) as err:
        load_manifest(path)
    assert "batchSize (64) is the global batch and must be a multiple of workers (3)" in str(err.value)
    proc = subprocess.run(gpubatch(manifest(tmp_path, "ok", epochs=1), "--workers", "3"), env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "multiple of workers (3)" in proc.stderr


def test_worker_group_from_the_environment(tmp_path: Path) -> None:
    spec = load_manifest(manifest(tmp_path, "g", epochs=1, extra="  workers: 2\n")).spec
    assert WorkerGroup.from_env(load_manifest(manifest(tmp_path, "single", epochs=1)).spec, {}) is None
    hosts = "g-train-0.g-workers:2222,g-train-1.g-workers:2222"
    group = WorkerGroup.from_env(spec, {"GPUBATCH_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": "1"})
    assert group is not None and group.count == 2 and not group.is_chief
    assert group.tf_config() == {"cluster": {"worker": hosts.split(",")}, "task": {"type": "worker", "index": 1}}
    assert group.as_dict(64)["perWorkerBatchSize"] == 32
    with pytest.raises(BadInput, match="GPUBATCH_WORKER_HOSTS"):
        WorkerGroup.from_env(spec, {})
    with pytest.raises(BadInput, match="names 1 workers but spec.workers is 2"):
        WorkerGroup.from_env(spec, {"GPUBATCH_WORKER_HOSTS": "a:1", "JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(BadInput, match="outside 0..1"):
        WorkerGroup.from_env(spec, {"GPUBATCH_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": "2"})


@pytest.mark.slow
def test_two_jax_workers_match_one_worker(tmp_path: Path) -> None:
    """backend jax: jax.distributed.initialize (worker 0 the coordinator) + Keras DataParallel,
    each process feeding its own rows of every global batch. Runs where jax is installed
    (the CPU and GPU images do not ship it; `pip install "jax[cpu]"`)."""
    pytest.importorskip("jax")
    extra = "  backend: jax\n"
    one = subprocess.run(gpubatch(manifest(tmp_path, "j1", epochs=3, extra=extra)), env=env(),
                         capture_output=True, text=True, timeout=600)
    two = subprocess.run(gpubatch(manifest(tmp_path, "j2", epochs=3, extra=extra), "--workers", "2"), env=env(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    s1, s2 = summary_of(one), summary_of(two)
    assert s2["backend"] == "jax" and s2["workers"]["engine"] == "jax.distributed + keras.distribution.DataParallel"
    m1 = json.loads((tmp_path / "out/j1" / METRICS_FILE).read_text())
    m2 = json.loads((tmp_path / "out/j2" / METRICS_FILE).read_text())
    assert m1["optimizerSteps"] == m2["optimizerSteps"] == 3 * int(np.ceil(2400 / 64))
    assert abs(s1["metrics"]["accuracy"] - s2["metrics"]["accuracy"]) <= 0.01, (s1["metrics"], s2["metrics"])
    assert (tmp_path / "out/j2" / MODEL_FILE).is_file()


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_the_group_at_an_agreed_step_and_it_resumes_there(tmp_path: Path) -> None:
    """As a pod of the group evicted: worker 1 alone gets SIGTERM mid-epoch. The group agrees on
    the step (an all-reduce every AGREE_EVERY_STEPS steps), worker 0 saves it, both exit 143, the
    group restarts and resumes at that step, and ends with the weights of an uninterrupted group."""
    from gpubatch_jobs.artifacts import load_artifact
    from gpubatch_jobs.train.loop import AGREE_EVERY_STEPS

    epochs = 3
    whole = subprocess.run(gpubatch(manifest(tmp_path, "whole", epochs=epochs, rows=8000), "--workers", "2"),
                           env=env(), capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]

    path = manifest(tmp_path, "cut", epochs=epochs, rows=8000)
    progress = tmp_path / "progress.json"
    group = subprocess.Popen(gpubatch(path, "--workers", "2", "--progress-file", str(progress)), env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # SIGTERM past epoch 2's first agreement and well before its end, seen in the group's progress
    # (a fixed delay after epoch 1 came before the first agreement on a loaded machine).
    deadline = time.monotonic() + 600
    while steps_into_epoch(progress, 2, epochs) <= AGREE_EVERY_STEPS:
        assert group.poll() is None, group.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"worker 0 reported no step of epoch 2 past {AGREE_EVERY_STEPS} in time"
        time.sleep(0.05)
    victim = _worker(group.pid, 1)
    assert victim is not None, "worker 1 not found among the supervisor's children"
    os.kill(victim, signal.SIGTERM)
    out, err = group.communicate(timeout=900)
    assert group.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    first, second = summary["workers"]["attempts"]
    assert first["exitCode"] == 143 and second["exitCode"] == 0, summary["workers"]
    resumed = summary["resumedFrom"]
    assert resumed["epoch"] == 1 and resumed["step"] > 0 and resumed["step"] % AGREE_EVERY_STEPS == 0, resumed
    metrics = json.loads((tmp_path / "out/cut" / METRICS_FILE).read_text())
    assert metrics["history"]["epoch"] == list(range(1, epochs + 1))
    mine, _ = load_artifact(tmp_path / "out/cut")
    theirs, _ = load_artifact(tmp_path / "out/whole")
    for a, b in zip(mine.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

"""TrainJob `workers: 2` as two real pods on the real node, talking TensorFlow's gRPC
collectives to each other by their stable DNS names (`JOB-i.SERVICE`, answered by the
node's CoreDNS from the headless Service the operator made).

- a one-worker and a two-worker TrainJob of the same spec (global batch, seed) end with
  the same number of optimizer steps and validation accuracy within 0.01;
- worker 1's process is SIGKILLed mid-epoch (from the host, as an OOM kill would): the Job
  fails, the operator restarts the whole group as a new attempt, and it resumes from the
  checkpoint worker 0 wrote; the history has exactly `epochs` epochs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.cluster import harness
from tests.e2e.conftest import claim_dir, diagnose, get, make_claims

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

API = "gpubatch.dev/v1alpha1"
FINAL = {"Succeeded", "Failed"}


def write_rows(folder: Path, name: str, rows: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 12)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(12)}, "label": label}).to_parquet(folder / name)


def train_job(name: str, rows: str, workers: int, epochs: int, **extra: Any) -> dict[str, Any]:
    spec = {
        "device": {"policy": "cpu"},
        "model": {"type": "dnn", "hiddenUnits": [32]},
        "epochs": epochs, "batchSize": 64, "seed": 3, "workers": workers,
        "input": {"path": f"pvc://data/{rows}"},
        "output": {"path": f"pvc://out/{name}", "overwrite": True},
        **extra,
    }
    return {"apiVersion": API, "kind": "TrainJob", "metadata": {"name": name}, "spec": spec}


def wait_final(cluster: harness.Cluster, ns: str, name: str, timeout: float = 900,
               seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = get(cluster, ns, "trainjob", name).get("status") or {}
        if seen is not None and (not seen or seen[-1] != status):
            seen.append(status)
        if status.get("phase") in FINAL:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"trainjob/{name} not final after {timeout:.0f}s: {status}\n{diagnose(cluster, ns)}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def claims(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str,
           data_dir: Path) -> tuple[Path, Path]:
    data = claim_dir(data_dir, e2e_namespace, "data")
    out = claim_dir(data_dir, e2e_namespace, "out")
    write_rows(data, "rows.parquet", 3000)
    write_rows(data, "long.parquet", 6000)
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    return data, out


def worker_pods(cluster: harness.Cluster, ns: str, job: str) -> dict[int, dict[str, Any]]:
    pods = cluster.get("pods", "-n", ns, "-l", f"job-name={job}")["items"]
    return {int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]): p for p in pods}


def test_two_worker_pods_match_one_worker(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                          claims: tuple[Path, Path], real_node: str) -> None:
    _, out = claims
    k8s_cluster.apply(train_job("one", "rows.parquet", 1, 3), namespace=e2e_namespace)
    one = wait_final(k8s_cluster, e2e_namespace, "one")
    assert one["phase"] == "Succeeded", f"{one}\n{diagnose(k8s_cluster, e2e_namespace)}"

    k8s_cluster.apply(train_job("two", "rows.parquet", 2, 3), namespace=e2e_namespace)
    seen: list[dict[str, Any]] = []
    two = wait_final(k8s_cluster, e2e_namespace, "two", seen=seen)
    assert two["phase"] == "Succeeded", f"{two}\n{diagnose(k8s_cluster, e2e_namespace)}"

    # Two real pods of one Indexed Job, both on the real node, both exit 0.
    job = get(k8s_cluster, e2e_namespace, "job", two["jobName"])
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["completionMode"]) == (2, 2, "Indexed")
    pods = worker_pods(k8s_cluster, e2e_namespace, two["jobName"])
    assert sorted(pods) == [0, 1]
    for pod in pods.values():
        assert pod["spec"]["nodeName"] == real_node and pod["spec"]["subdomain"] == "two-workers"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    service = get(k8s_cluster, e2e_namespace, "service", "two-workers")
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"

    # Status: the group, the per-worker batch, worker 0's result; ready workers seen while running.
    assert two["workers"]["total"] == 2 and two["workers"]["perWorkerBatchSize"] == 32
    assert any((s.get("workers") or {}).get("ready") == 2 for s in seen), seen
    result = two["result"]
    assert result["workers"]["total"] == 2 and result["workers"]["index"] == 0
    assert result["workers"]["engine"] == "tf.distribute.MultiWorkerMirroredStrategy"

    # The same training as one worker: same steps, accuracy within 0.01.
    m1 = json.loads((out / "one" / "metrics.json").read_text())
    m2 = json.loads((out / "two" / "metrics.json").read_text())
    assert m1["optimizerSteps"] == m2["optimizerSteps"] == 3 * int(np.ceil(2400 / 64))
    assert abs(m1["history"]["val_accuracy"][-1] - m2["history"]["val_accuracy"][-1]) <= 0.01
    assert abs(one["result"]["metrics"]["accuracy"] - result["metrics"]["accuracy"]) <= 0.01
    assert (out / "two" / "model.keras").is_file()


def _worker_process(trainjob: str, index: int) -> int | None:
    """The host pid of a worker container's engine process (its environment names both)."""
    want = (f"GPUBATCH_NAME={trainjob}".encode(), f"JOB_COMPLETION_INDEX={index}".encode())
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            environ = (task / "environ").read_bytes().split(b"\0")
            cmdline = (task / "cmdline").read_bytes()
        except OSError:
            continue
        if all(w in environ for w in want) and b"gpubatch-job" in cmdline:
            return int(task.name)
    return None


def test_killed_worker_pod_restarts_the_group(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                              claims: tuple[Path, Path]) -> None:
    _, out = claims
    epochs = 4
    k8s_cluster.apply(train_job("gang", "long.parquet", 2, epochs, backoffLimit=2), namespace=e2e_namespace)
    latest = out / "gang" / "checkpoints" / "latest.json"

    def committed() -> int:
        try:
            return int(json.loads(latest.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0

    harness.wait_until(lambda: committed() >= 1, timeout=600, what="worker 0's checkpoint of epoch 1")
    assert committed() < epochs, "training ended before the kill: make the epochs longer"
    victim = _worker_process("gang", 1)
    assert victim is not None, diagnose(k8s_cluster, e2e_namespace)
    os.kill(victim, signal.SIGKILL)
    killed_after = committed()

    seen: list[dict[str, Any]] = []
    status = wait_final(k8s_cluster, e2e_namespace, "gang", timeout=900, seen=seen)
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert status["workers"]["groupRestarts"] == 1, status["workers"]
    assert status["attempts"] == 2
    assert status["result"]["resumedFromEpoch"] >= killed_after >= 1
    metrics = json.loads((out / "gang" / "metrics.json").read_text())
    assert metrics["history"]["epoch"] == list(range(1, epochs + 1))
    restarting = [s["message"] for s in seen if "restarting the whole group" in s.get("message", "")]
    assert restarting and "worker 1" in restarting[0], [s.get("message") for s in seen]

"""Preemption that keeps the work, for real: Kueue preempts a low-priority TrainJob (and a
RenderJob, and a PredictJob) on the real node for a high-priority job, and the Eviction API evicts its pod once
more; each time the pod saves its work within the grace period, and the job finishes equal to
an uninterrupted run, losing at most the step in flight.

Kueue runs as in test_kueue.py (tests/e2e/kueue.py); the queues, WorkloadPriorityClasses and
the ClusterQueue with `preemption.withinClusterQueue: LowerPriority` are
docs/kueue/preemption.yaml, applied as they are. The quota fits one job of 1 CPU at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.cluster import harness
from tests.e2e.conftest import claim_dir, diagnose, get, make_claims
from tests.e2e.kueue import Kueue

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

API = "gpubatch.dev/v1alpha1"
QUEUES = harness.REPO_ROOT / "docs" / "kueue" / "preemption.yaml"
QUEUE = "team-p"
# Preempted in epoch 2, evicted in epoch 3 after the resumed pod's first checkpoint, then done.
EPOCHS = 4
TRAIN_BATCH = 8
FINAL = {"Succeeded", "Failed"}
ONE_CPU = {"requests": {"cpu": "1", "memory": "1Gi"}}


@pytest.fixture(scope="module")
def kueue(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str) -> Iterator[Kueue]:
    manager = Kueue(k8s_cluster, e2e_namespace)
    try:
        manager.start()
        harness.wait_until(lambda: k8s_cluster.kubectl("apply", "-n", e2e_namespace, "-f", str(QUEUES)).returncode == 0,
                           timeout=60, what=f"kubectl apply -f {QUEUES}")
        harness.wait_until(lambda: _active(k8s_cluster, e2e_namespace), timeout=60,
                           what=lambda: f"LocalQueue {QUEUE} active:\n{manager.log()}")
        yield manager
    finally:
        k8s_cluster.kubectl("-n", e2e_namespace, "delete", "trainjobs,renderjobs,predictjobs,jobs", "--all", "--wait=true",
                            timeout=180)
        manager.stop()


def _active(cluster: harness.Cluster, ns: str) -> bool:
    local = cluster.kubectl("-n", ns, "get", "localqueue", QUEUE, "-o", "json")
    if local.returncode != 0:
        return False
    conditions = {c["type"]: c["status"] for c in json.loads(local.stdout).get("status", {}).get("conditions", [])}
    return conditions.get("Active") == "True"


@pytest.fixture(scope="module")
def claims(k8s_cluster: harness.Cluster, e2e_namespace: str, kueue: Kueue, data_dir: Path) -> Path:
    data = claim_dir(data_dir, e2e_namespace, "data")
    claim_dir(data_dir, e2e_namespace, "out")
    rng = np.random.default_rng(11)
    # 80,000 rows in batches of 8 (TRAIN_BATCH): 10,000 steps, epochs of some 15 s on one idle CPU,
    # so that a preemption a few seconds after an epoch's checkpoint lands mid-epoch. Kueue's
    # preemption (evict the workload, suspend the Job, delete the pod) took more than the 6 s left
    # of a 7 s epoch (batches of 16) on a loaded machine: the SIGTERM came at the epoch's end.
    x = rng.normal(size=(80_000, 12)).astype(np.float32)
    label = (x[:, 0] - 0.7 * x[:, 3] + 0.2 * rng.normal(size=len(x)) > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(12)}, "label": label}).to_parquet(data / "rows.parquet")
    import h5py

    with h5py.File(data / "series.h5", "w") as f:
        f["close"] = 50 + np.cumsum(rng.standard_normal(12_000))
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    return data


def train_job(name: str, priority: str | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": {"policy": "cpu"},
        "model": {"type": "dnn", "hiddenUnits": [64, 64], "dropout": 0.1},
        "epochs": EPOCHS, "batchSize": TRAIN_BATCH, "seed": 3,
        "input": {"path": "pvc://data/rows.parquet"},
        "output": {"path": f"pvc://out/{name}"},
        "resources": ONE_CPU, "terminationGracePeriodSeconds": 60,
    }
    if priority:
        body.update(queueName=QUEUE, priorityClass=priority)
    body.update(spec)
    return {"apiVersion": API, "kind": "TrainJob", "metadata": {"name": name}, "spec": body}


def render_job(name: str, priority: str | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": {"policy": "cpu"},
        "input": {"path": "pvc://data/series.h5", "dataset": "close"},
        "output": {"path": f"pvc://out/{name}.h5"},
        "seqLen": 40, "width": 320, "height": 240, "batchSize": 16, "previewImages": 0,
        "resources": ONE_CPU,
    }
    if priority:
        body.update(queueName=QUEUE, priorityClass=priority)
    body.update(spec)
    return {"apiVersion": API, "kind": "RenderJob", "metadata": {"name": name}, "spec": body}


def status(cluster: harness.Cluster, ns: str, kind: str, name: str) -> dict[str, Any]:
    return get(cluster, ns, kind, name).get("status") or {}


def wait_final(cluster: harness.Cluster, ns: str, kind: str, name: str, timeout: float = 900) -> dict[str, Any]:
    return harness.wait_until(lambda: (s := status(cluster, ns, kind, name)).get("phase") in FINAL and s,
                              timeout=timeout, interval=1.0, what=lambda: f"{kind} {name} final:\n{diagnose(cluster, ns)}")


def running_pod(cluster: harness.Cluster, ns: str, job: str) -> dict[str, Any] | None:
    pods = cluster.get("pods", "-n", ns, "-l", f"job-name={job}")["items"]
    return next((p for p in pods if p["status"].get("phase") == "Running"
                 and not p["metadata"].get("deletionTimestamp")), None)


def evict(cluster: harness.Cluster, ns: str, pod: str) -> None:
    """The Eviction API (what `kubectl drain` calls for each pod)."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}}
    cluster.kubectl("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{pod}/eviction", "-f", "-",
                    input=json.dumps(body), check=True)


def load_weights(folder: Path) -> list[np.ndarray]:
    from gpubatch_jobs.artifacts import load_artifact

    model, _ = load_artifact(folder)
    return [np.asarray(w) for w in model.get_weights()]


def test_trainjob_preempted_by_kueue_and_evicted_resumes_to_the_step(
        k8s_cluster: harness.Cluster, e2e_namespace: str, kueue: Kueue, claims: Path, data_dir: Path) -> None:
    ns, cluster = e2e_namespace, k8s_cluster
    cluster.apply(train_job("low", "batch-low"), namespace=ns)
    # Mid-epoch 2: the epoch-1 checkpoint is in status, and a few more steps are done.
    harness.wait_until(lambda: (status(cluster, ns, "trainjob", "low").get("checkpoint") or {}).get("epoch", 0) >= 1,
                       timeout=600, interval=0.5, what=lambda: f"the first epoch checkpoint:\n{diagnose(cluster, ns)}")
    time.sleep(1)
    cluster.apply(render_job("urgent", "batch-high", seqLen=16, width=32, height=32), namespace=ns)
    preempted = harness.wait_until(
        lambda: (s := status(cluster, ns, "trainjob", "low")).get("preemptions", 0) >= 1 and s, timeout=300,
        what=lambda: f"Kueue to preempt the low-priority TrainJob:\n{kueue.log()}\n{diagnose(cluster, ns)}")
    first = preempted["checkpoint"]
    assert first["epoch"] >= 1 and first["step"] > 0, preempted  # a step-level checkpoint, not an epoch's
    assert wait_final(cluster, ns, "renderjob", "urgent")["phase"] == "Succeeded"

    # Readmitted; once it has trained past the first checkpoint, its pod is evicted.
    harness.wait_until(
        lambda: (c := status(cluster, ns, "trainjob", "low").get("checkpoint") or {}).get("time", "") > first["time"]
        and c.get("step") == 0, timeout=600, interval=0.5, what="a checkpoint after the resumed pod's first epoch")
    pod = harness.wait_until(lambda: running_pod(cluster, ns, "low-train"), timeout=120, what="the running pod")
    time.sleep(2)
    evict(cluster, ns, pod["metadata"]["name"])
    evicted = harness.wait_until(
        lambda: (s := status(cluster, ns, "trainjob", "low")).get("preemptions", 0) >= 2 and s, timeout=300,
        what=lambda: f"the evicted pod to save a checkpoint:\n{diagnose(cluster, ns)}")
    assert evicted["checkpoint"]["step"] > 0, evicted

    done = wait_final(cluster, ns, "trainjob", "low")
    assert done["phase"] == "Succeeded", f"{done}\n{diagnose(cluster, ns)}"
    result = done["result"]
    assert result["resumedFrom"] == {"epoch": evicted["checkpoint"]["epoch"], "step": evicted["checkpoint"]["step"]}
    assert done["preemptions"] == 2

    # The same spec, never preempted (no queue): the weights must be equal.
    cluster.apply(train_job("reference", None), namespace=ns)
    reference = wait_final(cluster, ns, "trainjob", "reference")
    assert reference["phase"] == "Succeeded", diagnose(cluster, ns)
    out = claim_dir(data_dir, ns, "out")
    metrics = json.loads((out / "low" / "metrics.json").read_text())
    assert metrics["history"]["epoch"] == list(range(1, EPOCHS + 1))
    for mine, theirs in zip(load_weights(out / "low"), load_weights(out / "reference"), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
    # kubectl get shows the count.
    table = cluster.kubectl("-n", ns, "get", "trainjob", "low", check=True).stdout
    assert "PREEMPTED" in table.splitlines()[0] and " 2 " in table.splitlines()[1], table


def test_renderjob_preempted_by_kueue_keeps_its_images(
        k8s_cluster: harness.Cluster, e2e_namespace: str, kueue: Kueue, claims: Path, data_dir: Path) -> None:
    ns, cluster = e2e_namespace, k8s_cluster
    # One image a batch (each committed and flushed): slow enough to be caught mid-run, where the
    # CPU renderer would otherwise finish these 12,000 images in a few seconds.
    cluster.apply(render_job("charts-low", "batch-low", batchSize=1), namespace=ns)
    harness.wait_until(lambda: int((status(cluster, ns, "renderjob", "charts-low").get("progress") or "0%")
                                   .rstrip("%")) >= 10,
                       timeout=600, interval=0.5, what=lambda: f"10% of the images:\n{diagnose(cluster, ns)}")
    cluster.apply(train_job("urgent-train", "batch-high", epochs=1), namespace=ns)
    preempted = harness.wait_until(
        lambda: (s := status(cluster, ns, "renderjob", "charts-low")).get("preemptions", 0) >= 1 and s, timeout=300,
        what=lambda: f"Kueue to preempt the low-priority RenderJob:\n{kueue.log()}\n{diagnose(cluster, ns)}")
    kept = preempted["checkpoint"]["done"]
    assert kept > 0, preempted
    assert wait_final(cluster, ns, "trainjob", "urgent-train")["phase"] == "Succeeded"
    done = wait_final(cluster, ns, "renderjob", "charts-low")
    assert done["phase"] == "Succeeded", diagnose(cluster, ns)
    assert done["result"]["resumedFrom"] == kept and done["result"]["rendered"] == done["result"]["images"] - kept

    cluster.apply(render_job("charts-ref", None), namespace=ns)
    assert wait_final(cluster, ns, "renderjob", "charts-ref")["phase"] == "Succeeded"
    import h5py

    out = claim_dir(data_dir, ns, "out")
    with h5py.File(out / "charts-low.h5", "r") as got, h5py.File(out / "charts-ref.h5", "r") as want:
        assert np.array_equal(got["index"][()], want["index"][()])
        assert np.array_equal(got["images"][()], want["images"][()])


def predict_job(name: str, priority: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": {"policy": "cpu"}, "model": "pvc://data/rnn", "batchSize": 2, "chunkRows": 6000,
        "input": {"path": "pvc://data/docs.parquet"}, "output": {"path": f"pvc://out/{name}.parquet"},
        "resources": ONE_CPU,
    }
    if priority:
        body.update(queueName=QUEUE, priorityClass=priority)
    return {"apiVersion": API, "kind": "PredictJob", "metadata": {"name": name}, "spec": body}


def test_predictjob_preempted_by_kueue_keeps_its_chunks(
        k8s_cluster: harness.Cluster, e2e_namespace: str, kueue: Kueue, claims: Path, data_dir: Path) -> None:
    from tests.unit.test_predict_support import make_artifact, make_rows

    ns, cluster = e2e_namespace, k8s_cluster
    make_artifact(claims / "rnn")  # the same Keras as the images' (images/requirements-engine.txt)
    make_rows(lengths=[300] * 400, seed=3).to_parquet(claims / "docs.parquet", index=False)  # 120,000 rows
    for path in [claims / "rnn", *(claims / "rnn").iterdir(), claims / "docs.parquet"]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    cluster.apply(predict_job("labels-low", "batch-low"), namespace=ns)
    harness.wait_until(lambda: (status(cluster, ns, "predictjob", "labels-low").get("checkpoint") or {}).get("done")
                       or (status(cluster, ns, "predictjob", "labels-low").get("phase") in FINAL),
                       timeout=600, interval=0.5, what=lambda: f"a first chunk kept:\n{diagnose(cluster, ns)}")
    cluster.apply(render_job("urgent-render", "batch-high", seqLen=16, width=32, height=32), namespace=ns)
    preempted = harness.wait_until(
        lambda: (s := status(cluster, ns, "predictjob", "labels-low")).get("preemptions", 0) >= 1 and s, timeout=300,
        what=lambda: f"Kueue to preempt the low-priority PredictJob:\n{kueue.log()}\n{diagnose(cluster, ns)}")
    kept = preempted["checkpoint"]["done"]
    assert kept > 0 and kept % 6000 == 0, preempted
    assert wait_final(cluster, ns, "renderjob", "urgent-render")["phase"] == "Succeeded"
    done = wait_final(cluster, ns, "predictjob", "labels-low")
    assert done["phase"] == "Succeeded", diagnose(cluster, ns)
    # The last pod resumed after every chunk the preempted one kept (more only if a later pod of the
    # job was also stopped after saving some: then status counts that preemption too).
    assert done["result"]["chunks"] == 20, done
    assert (done["result"]["resumedChunks"] == kept // 6000
            or (done["result"]["resumedChunks"] > kept // 6000 and done["preemptions"] > 1)), \
        f"kept {kept} rows when preempted; {done}\n{diagnose(cluster, ns)}"

    cluster.apply(predict_job("labels-ref", None), namespace=ns)
    assert wait_final(cluster, ns, "predictjob", "labels-ref")["phase"] == "Succeeded"
    out = claim_dir(data_dir, ns, "out")
    got, want = pd.read_parquet(out / "labels-low.parquet"), pd.read_parquet(out / "labels-ref.parquet")
    assert got.columns.tolist() == want.columns.tolist() and len(got) == len(want) == 120_000
    for column in want.columns:
        if want[column].dtype.kind == "f":
            np.testing.assert_allclose(got[column], want[column], atol=1e-6, err_msg=column)
        else:
            assert got[column].tolist() == want[column].tolist(), column

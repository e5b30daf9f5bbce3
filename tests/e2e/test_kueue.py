"""Kueue for real: its manager admits our Jobs from a ClusterQueue with a GPU quota,
and the operator moves an `auto` job to the CPU when Kueue keeps its GPU Job waiting.

Kueue runs as its users run it (tests/e2e/kueue.py: its CRDs, its manager, its
webhooks), built from its Go module; the queues are docs/kueue/queues.yaml,
the manifest docs/install.md shows. The real node advertises fake
`nvidia.com/gpu` (as in test_real_pods's fallback test) and carries the GPU
flavour's node label while the module runs; both are removed afterwards.
Kueue is installed only for this module, its webhooks scoped to its namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness
from tests.e2e.conftest import CPU_IMAGE, claim_dir, diagnose, get, make_claims
from tests.e2e.kueue import Kueue

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

sys.path.insert(0, str(harness.REPO_ROOT / "images" / "smoke"))
import make_data  # noqa: E402

API = "gpubatch.dev/v1alpha1"
QUEUES = harness.REPO_ROOT / "docs" / "kueue" / "queues.yaml"
QUEUE = "team-a"
GPU_LABEL = "nvidia.com/gpu.present"
FINAL = {"Succeeded", "Failed"}


@pytest.fixture(scope="module")
def kueue(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str,
          real_node: str) -> Iterator[Kueue]:
    """Kueue up, the queues of docs/kueue/queues.yaml applied, the real node showing 4 fake GPUs."""
    def capacity(value: str | None) -> None:
        k8s_cluster.kubectl("patch", "node", real_node, "--subresource=status", "--type=merge",
                            "-p", json.dumps({"status": {"capacity": {"nvidia.com/gpu": value}}}), check=True)

    manager = Kueue(k8s_cluster, e2e_namespace)
    try:
        manager.start()
        capacity("4")
        k8s_cluster.kubectl("label", "node", real_node, f"{GPU_LABEL}=true", "--overwrite", check=True)
        harness.wait_until(
            lambda: get(k8s_cluster, "", "node", real_node)["status"].get("allocatable", {}).get("nvidia.com/gpu") == "4",
            timeout=60, what="the real node's allocatable nvidia.com/gpu")
        # The webhooks answer as soon as the manager is ready; an apply in its first second may still race it.
        harness.wait_until(lambda: k8s_cluster.kubectl("apply", "-n", e2e_namespace, "-f", str(QUEUES)).returncode == 0,
                           timeout=60, what=f"kubectl apply -f {QUEUES}")
        harness.wait_until(lambda: _active(k8s_cluster, e2e_namespace), timeout=60,
                           what=f"ClusterQueue and LocalQueue {QUEUE} active:\n{manager.log()}")
        yield manager
    finally:
        k8s_cluster.kubectl("-n", e2e_namespace, "delete", "renderjobs,jobs", "--all", "--wait=true", timeout=180)
        manager.stop()
        k8s_cluster.kubectl("label", "node", real_node, f"{GPU_LABEL}-")
        capacity(None)


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
    make_data.main(str(data))
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    return data


def render_job(name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "input": {"path": "pvc://data/series.h5", "dataset": "close"},
        "output": {"path": f"pvc://out/{name}.h5", "overwrite": True},
        "seqLen": 16, "width": 32, "height": 32, "previewImages": 4,
        "queueName": QUEUE,
        # Requests, so that Kueue assigns a flavour for cpu and memory too (it counts requests only).
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    }
    body.update(spec)
    return {"apiVersion": API, "kind": "RenderJob", "metadata": {"name": name}, "spec": body}


def workloads(cluster: harness.Cluster, ns: str) -> dict[str, dict[str, Any]]:
    """The namespace's Workloads by the name of the Job they stand for."""
    out = {}
    for item in cluster.get("workloads.kueue.x-k8s.io", "-n", ns)["items"]:
        owners = [o["name"] for o in item["metadata"].get("ownerReferences", []) if o["kind"] == "Job"]
        if owners:
            out[owners[0]] = item
    return out


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def flavors(workload: dict[str, Any]) -> dict[str, str]:
    assignment = ((workload.get("status") or {}).get("admission") or {}).get("podSetAssignments") or [{}]
    return assignment[0].get("flavors") or {}


class Watch:
    """What a test sees of Kueue's Workloads over time (a GPU Job's Workload goes with the Job)."""

    def __init__(self, cluster: harness.Cluster, ns: str) -> None:
        self.cluster, self.ns = cluster, ns
        self.admitted_at: dict[str, float] = {}  # Job -> when first seen admitted
        self.finished_at: dict[str, float] = {}
        self.flavor: dict[str, dict[str, str]] = {}
        self.waiting: dict[str, str] = {}  # Job -> Kueue's message while not admitted
        self.most_admitted_gpu = 0
        self.table = ""
        self.created: dict[str, str] = {}  # Job -> its Workload's creationTimestamp

    def look(self) -> None:
        now = time.monotonic()
        seen = workloads(self.cluster, self.ns)
        for job, item in seen.items():
            self.created.setdefault(job, item["metadata"]["creationTimestamp"])
            admitted = condition(item, "Admitted").get("status") == "True"
            if admitted and job not in self.admitted_at:
                self.admitted_at[job] = now
                self.flavor[job] = flavors(item)
            reserved = condition(item, "QuotaReserved")
            if not admitted and reserved.get("status") == "False" and reserved.get("message"):
                self.waiting[job] = reserved["message"]
            if condition(item, "Finished").get("status") == "True":
                self.finished_at.setdefault(job, now)
        for job in self.admitted_at.keys() - seen.keys():  # the Workload went with its Job
            self.finished_at.setdefault(job, now)
        running_gpu = [j for j, item in seen.items() if condition(item, "Admitted").get("status") == "True"
                       and condition(item, "Finished").get("status") != "True"
                       and self.flavor.get(j, {}).get("nvidia.com/gpu") == "gpu"]
        self.most_admitted_gpu = max(self.most_admitted_gpu, len(running_gpu))
        if len(seen) >= 3 and not self.table:
            self.table = self.cluster.kubectl("-n", self.ns, "get", "workloads").stdout


def wait_final(cluster: harness.Cluster, ns: str, names: list[str], watch: Watch, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        watch.look()
        objs = {n: get(cluster, ns, "renderjob", n) for n in names}
        if all((o.get("status") or {}).get("phase") in FINAL for o in objs.values()):
            return objs
        if time.monotonic() > deadline:
            raise AssertionError(f"not final after {timeout:.0f}s: {[o.get('status') for o in objs.values()]}\n"
                                 f"{diagnose(cluster, ns)}")
        time.sleep(0.5)


def test_kueue_admits_two_gpu_jobs_and_queues_the_third(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                        kueue: Kueue, claims: Path) -> None:
    """Quota 2 nvidia.com/gpu: of three one-GPU RenderJobs two are admitted and the third waits
    for quota; Kueue admits them in queue order, and all three run to completion.

    There is no GPU behind the fake nvidia.com/gpu: each GPU attempt holds its quota until the
    engine finds no usable GPU (exit 75); the operator re-runs it on the CPU image, through the
    same LocalQueue, where it gets the cpu flavour.
    """
    names = ["kq-1", "kq-2", "kq-3"]
    gpu = {"policy": "gpu", "gpus": 1}
    k8s_cluster.apply(*[render_job(n, device=gpu, image={"gpu": CPU_IMAGE}) for n in names], namespace=e2e_namespace)
    watch = Watch(k8s_cluster, e2e_namespace)
    objs = wait_final(k8s_cluster, e2e_namespace, names, watch)
    context = (f"admitted {watch.admitted_at}, waiting {watch.waiting}, flavours {watch.flavor}, "
               f"created {watch.created}\n{kueue.log()}")
    for name, obj in objs.items():
        assert obj["status"]["phase"] == "Succeeded", f"{name}: {obj['status']}\n{diagnose(k8s_cluster, e2e_namespace)}"
    jobs = [f"{n}-render" for n in names]
    # Two GPU Jobs at once, never more; one waited for quota, and it was the last in the queue.
    assert all(watch.flavor.get(j, {}).get("nvidia.com/gpu") == "gpu" for j in jobs), context
    assert watch.most_admitted_gpu == 2, context
    (waited,) = [j for j in jobs if j in watch.waiting]
    assert "insufficient" in watch.waiting[waited].lower(), context
    assert watch.created[waited] == max(watch.created[j] for j in jobs), context
    # Kueue admitted in queue order: the waiting one only once one of the other two had finished.
    first_two = [j for j in jobs if j != waited]
    assert all(watch.admitted_at[j] < watch.admitted_at[waited] for j in first_two), context
    assert watch.admitted_at[waited] >= min(watch.finished_at.get(j, float("inf")) for j in first_two), context
    # `kubectl get workloads` shows them, with their queue.
    assert all(j in watch.table for j in jobs) and QUEUE in watch.table, watch.table
    # The CPU re-runs went through the same queue and got the cpu flavour.
    for obj in objs.values():
        rerun = obj["status"]["jobName"]
        assert rerun.endswith("-cpu"), obj["status"]
        assert watch.flavor.get(rerun, {}).get("cpu") == "cpu", context


def test_auto_job_moves_to_the_cpu_when_kueue_has_no_gpu_quota(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                               kueue: Kueue, claims: Path) -> None:
    """Two Jobs hold the queue's whole GPU quota; a `policy: auto` RenderJob's GPU Job is not
    admitted within gpuPendingTimeout, so the operator replaces it by a CPU Job in the same queue,
    which Kueue admits on the cpu flavour: status says GpuQuotaExhausted."""
    hogs = []
    for i in (1, 2):
        template = harness.PodTemplate(f"gpu-hog-{i}", image=CPU_IMAGE).gpus(1)
        job = template.job()
        job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = QUEUE
        job["spec"]["suspend"] = True
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["command"], container["imagePullPolicy"] = ["sleep", "600"], "Never"
        hogs.append(job)
    k8s_cluster.apply(*hogs, namespace=e2e_namespace)
    try:
        harness.wait_until(
            lambda: all(condition(w, "Admitted").get("status") == "True" and flavors(w).get("nvidia.com/gpu") == "gpu"
                        for j, w in workloads(k8s_cluster, e2e_namespace).items() if j.startswith("gpu-hog"))
            and len([j for j in workloads(k8s_cluster, e2e_namespace) if j.startswith("gpu-hog")]) == 2,
            timeout=120, what=f"both GPU hogs admitted:\n{kueue.log()}")
        k8s_cluster.apply(render_job("kq-auto", device={"policy": "auto", "gpuPendingTimeout": "20s"}),
                          namespace=e2e_namespace)
        watch = Watch(k8s_cluster, e2e_namespace)
        obj = wait_final(k8s_cluster, e2e_namespace, ["kq-auto"], watch)["kq-auto"]
    finally:
        k8s_cluster.kubectl("-n", e2e_namespace, "delete", "job", "gpu-hog-1", "gpu-hog-2", "--wait=false")
    status = obj["status"]
    context = f"{status}\nadmitted {watch.admitted_at}, waiting {watch.waiting}, flavours {watch.flavor}"
    assert status["phase"] == "Succeeded", f"{context}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert status["device"] == "cpu" and status["attempts"] == 2 and status["jobName"] == "kq-auto-render-cpu", context
    fell_back = condition(obj, "FellBackToCPU")
    assert fell_back["status"] == "True" and fell_back["reason"] == "GpuQuotaExhausted", context
    assert QUEUE in fell_back["message"] and "20s" in fell_back["message"], fell_back
    # Kueue never admitted the GPU Job (it said why), and admitted the CPU one on the cpu flavour.
    assert "kq-auto-render" not in watch.admitted_at, context
    assert "insufficient" in watch.waiting.get("kq-auto-render", "").lower(), context
    assert watch.flavor.get("kq-auto-render-cpu", {}).get("cpu") == "cpu", context
    events = k8s_cluster.kubectl("-n", e2e_namespace, "get", "events", "--field-selector",
                                 "involvedObject.name=kq-auto", "-o", "json", check=True).stdout
    assert "GpuQuotaExhausted" in events


def test_the_queues_are_the_documented_ones(k8s_cluster: harness.Cluster, e2e_namespace: str, kueue: Kueue) -> None:
    """What this module applied is what docs/install.md shows (the doc embeds docs/kueue/queues.yaml)."""
    documented = [d for d in yaml.safe_load_all(QUEUES.read_text()) if d]
    for doc in documented:
        kind, name = doc["kind"], doc["metadata"]["name"]
        ns = ["-n", e2e_namespace] if kind == "LocalQueue" else []
        live = json.loads(k8s_cluster.kubectl(*ns, "get", f"{kind.lower()}.kueue.x-k8s.io", name, "-o", "json",
                                              check=True).stdout)
        for key, value in doc.get("spec", {}).items():
            assert live["spec"][key] == value or _subset(value, live["spec"][key]), (kind, key, live["spec"][key])


def _subset(want: Any, have: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(_subset(w, h) for w, h in zip(want, have, strict=True))
    return str(want) == str(have)


def test_a_job_held_by_a_full_queue_says_why(k8s_cluster: harness.Cluster, e2e_namespace: str, kueue: Kueue,
                                             claims: Path) -> None:
    """The queue's GPU quota is taken: a `policy: gpu` job waits in the queue, and its status.message
    (and so `gpubatch get`) gives Kueue's own reason from the Workload, in one line."""
    hogs = []
    for i in (1, 2):
        template = harness.PodTemplate(f"gpu-hold-{i}", image=CPU_IMAGE).gpus(1)
        job = template.job()
        job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = QUEUE
        job["spec"]["suspend"] = True
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["command"], container["imagePullPolicy"] = ["sleep", "600"], "Never"
        hogs.append(job)
    k8s_cluster.apply(*hogs, namespace=e2e_namespace)
    try:
        harness.wait_until(
            lambda: len([j for j, w in workloads(k8s_cluster, e2e_namespace).items()
                         if j.startswith("gpu-hold") and condition(w, "Admitted").get("status") == "True"]) == 2,
            timeout=120, what=f"both GPU holders admitted:\n{kueue.log()}")
        k8s_cluster.apply(render_job("kq-held", device={"policy": "gpu"}), namespace=e2e_namespace)

        def message() -> str | None:
            text = (get(k8s_cluster, e2e_namespace, "renderjob", "kq-held").get("status") or {}).get("message", "")
            return text if "insufficient" in text.lower() else None

        said = harness.wait_until(message, timeout=90, what="kq-held's status.message with Kueue's reason")
        assert "not admitted by Kueue from team-a" in said and "\n" not in said, said
        env = {**k8s_cluster.env, "PYTHONPATH": os.pathsep.join(
            str(harness.REPO_ROOT / p) for p in ("jobs", "operator", "."))}
        table = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "get", "-n", e2e_namespace],
                               capture_output=True, text=True, env=env, timeout=60)
        (row,) = [line for line in table.stdout.splitlines() if line.startswith("kq-held ")]
        assert "Pending" in row and "insufficient" in row.lower(), table.stdout + table.stderr
    finally:
        k8s_cluster.kubectl("-n", e2e_namespace, "delete", "renderjob", "kq-held", "--wait=false")
        k8s_cluster.kubectl("-n", e2e_namespace, "delete", "job", "gpu-hold-1", "gpu-hold-2", "--wait=false")

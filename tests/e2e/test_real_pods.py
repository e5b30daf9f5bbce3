"""The spine, for real: CR -> operator pod -> Job -> real pod -> engine -> output
on a volume -> termination message -> status.result.

Every pod here runs on the test cluster's real node (kubelet + containerd +
runc) from the images `make images` built; the operator itself is installed by
helm and runs as a pod on the operator image. Volumes are real PVCs of the
default StorageClass (local-path-provisioner); the tests read the outputs from
the host folders behind them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.cluster import harness
from tests.e2e.conftest import (
    CPU_IMAGE,
    GPU_IMAGE,
    OPERATOR_IMAGE,
    claim_dir,
    diagnose,
    get,
    make_claims,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

SMOKE = harness.REPO_ROOT / "images" / "smoke"
sys.path.insert(0, str(SMOKE))
import make_data  # noqa: E402  (images/smoke/make_data.py: the smoke inputs)

API = "gpubatch.dev/v1alpha1"
FINAL = {"Succeeded", "Failed"}


def wait_final(cluster: harness.Cluster, ns: str, kind: str, name: str, timeout: float = 600,
               watch: list[dict[str, Any]] | None = None,
               pods: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Poll until the resource is Succeeded or Failed; every status seen is appended to
    `watch`, and the last state of every pod of its Jobs is kept in `pods` (by name)."""
    deadline = time.monotonic() + timeout
    while True:
        obj = get(cluster, ns, kind, name)
        status = obj.get("status") or {}
        if watch is not None and (not watch or watch[-1] != status):
            watch.append(status)
        if pods is not None:
            selector = f"gpubatch.dev/owner-uid={obj['metadata']['uid']}"
            pods.update((pod["metadata"]["name"], pod) for pod in cluster.get("pods", "-n", ns, "-l", selector)["items"])
        if status.get("phase") in FINAL:
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"{kind}/{name} not final after {timeout:.0f}s: {status}\n{diagnose(cluster, ns)}")
        time.sleep(0.5)


def job_pods(cluster: harness.Cluster, ns: str, job: str) -> list[dict[str, Any]]:
    return cluster.get("pods", "-n", ns, "-l", f"job-name={job}")["items"]


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]["state"].get("terminated") or {}


def render_job(name: str, series: str, out: str, **spec: Any) -> dict[str, Any]:
    body = {
        "input": {"path": f"pvc://data/{series}", "dataset": "close"},
        "output": {"path": f"pvc://out/{out}", "overwrite": True},
        "seqLen": 16, "width": 32, "height": 32, "previewImages": 4,
        "device": {"policy": "cpu"},
    }
    body.update(spec)
    return {"apiVersion": API, "kind": "RenderJob", "metadata": {"name": name}, "spec": body}


def write_series(folder: Path, name: str, points: int, seed: int = 3) -> None:
    close = 100 + np.cumsum(np.random.default_rng(seed).normal(size=points)).astype("float32")
    with h5py.File(folder / name, "w") as h5:
        h5["close"] = close


@pytest.fixture(scope="module")
def claims(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str,
           data_dir: Path) -> tuple[Path, Path]:
    """PVCs `data` (inputs, written here on the host) and `out` (outputs), and their host folders."""
    data = claim_dir(data_dir, e2e_namespace, "data")
    out = claim_dir(data_dir, e2e_namespace, "out")
    make_data.main(str(data))
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    return data, out


def test_operator_runs_as_a_real_pod(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                     operator_release: str, real_node: str) -> None:
    pods = k8s_cluster.get("pods", "-n", e2e_namespace, "-l", "app.kubernetes.io/component=operator")["items"]
    assert pods, diagnose(k8s_cluster, e2e_namespace)
    for pod in pods:
        assert pod["spec"]["nodeName"] == real_node
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", pod["status"]  # the readiness probe (/healthz) passed
        status = pod["status"]["containerStatuses"][0]
        assert status["image"].endswith(OPERATOR_IMAGE), status["image"]
        assert status["restartCount"] == 0, status
    # /metrics, scraped from the pod through its Service (the API server's service proxy).
    metrics = k8s_cluster.kubectl(
        "get", "--raw",
        f"/api/v1/namespaces/{e2e_namespace}/services/{operator_release}-metrics:metrics/proxy/metrics",
        check=True,
    ).stdout
    assert "# TYPE gpubatch_" in metrics, metrics[:2000]
    assert "process_resident_memory_bytes" in metrics


def test_render_job_runs_in_a_real_pod(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                       claims: tuple[Path, Path], real_node: str) -> None:
    data, out = claims
    # 60,000 windows of 1,024 points: some 10 s of drawing, longer than the pod's
    # 5 s between progress reports, with a small output (32x32 images).
    windows, seq_len = 60_000, 1024
    write_series(data, "long.h5", windows + seq_len - 1)
    k8s_cluster.apply(render_job("render-e2e", "long.h5", "long.h5", batchSize=4096, seqLen=seq_len),
                      namespace=e2e_namespace)
    seen: list[dict[str, Any]] = []
    done = wait_final(k8s_cluster, e2e_namespace, "renderjob", "render-e2e", watch=seen)
    status = done["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert status["device"] == "cpu"

    # The output, read back from the volume's host folder.
    with h5py.File(out / "long.h5") as h5:
        images = h5["images"]
        assert images.shape == (windows, 32, 32) and images.dtype == np.uint8
        assert int(np.count_nonzero(images[0])) > 0 and int(np.count_nonzero(images[-1])) > 0
        assert sorted(h5["index"][:].tolist()) == list(range(windows))
    assert (out / "long.preview.png").stat().st_size > 0  # <stem>.preview.png

    # status.result is what the pod wrote as its termination message.
    pod = next(p for p in job_pods(k8s_cluster, e2e_namespace, status["jobName"]) if terminated(p).get("exitCode") == 0)
    assert pod["spec"]["nodeName"] == real_node
    assert pod["status"]["containerStatuses"][0]["image"].endswith(CPU_IMAGE)
    # (null fields are dropped: a merge patch cannot store them)
    message = json.loads(terminated(pod)["message"])
    assert {key: value for key, value in message.items() if value is not None} == status["result"]
    assert status["result"]["images"] == windows

    # status.progress moved during the run: the pod patched its own annotation
    # through the kubernetes Service with its ServiceAccount token.
    progress = [s.get("progress") for s in seen if s.get("phase") == "Running" and s.get("progress")]
    assert any(p != "100%" for p in progress), seen
    fields = json.loads(k8s_cluster.kubectl("-n", e2e_namespace, "get", "pod", pod["metadata"]["name"], "-o", "json",
                                            "--show-managed-fields", check=True).stdout)["metadata"]["managedFields"]
    writers = [f for f in fields if "gpubatch.dev/progress" in json.dumps(f.get("fieldsV1", {}))]
    assert writers and all(f["operation"] == "Update" and f["manager"] != "kubectl" for f in writers), fields
    assert pod["metadata"]["annotations"]["gpubatch.dev/progress"]


def test_train_then_predict_share_a_volume(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                           claims: tuple[Path, Path]) -> None:
    data, out = claims
    for manifest in ("02-train.yaml", "03-predict.yaml"):
        k8s_cluster.kubectl("-n", e2e_namespace, "apply", "-f", str(SMOKE / manifest), check=True)
        kind, name = ("trainjob", "smoke-train") if "train" in manifest else ("predictjob", "smoke-predict")
        status = wait_final(k8s_cluster, e2e_namespace, kind, name)["status"]
        assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
        assert status["device"] == "cpu"
        assert status["result"]["ok"] is True, status["result"]
    # The model the train pod wrote is what the predict pod used.
    assert (out / "model" / "model.keras").is_file()
    assert (out / "model" / "preprocessing.json").is_file()
    rows = pd.read_parquet(data / "rows.parquet")
    predicted = pd.read_parquet(out / "predictions.parquet")
    assert len(predicted) == len(rows)
    assert set(predicted["label"]) <= {"up", "down"}
    probabilities = predicted[[c for c in predicted.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)


def test_bad_input_fails_at_once_with_the_engines_message(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                          claims: tuple[Path, Path]) -> None:
    """The engine in the pod finds the input wrong: exit 1, never retried, its message in status."""
    job = render_job("render-bad", "series.h5", "bad.h5", backoffLimit=3)
    job["spec"]["input"]["dataset"] = "no-such-dataset"
    k8s_cluster.apply(job, namespace=e2e_namespace)
    status = wait_final(k8s_cluster, e2e_namespace, "renderjob", "render-bad")["status"]
    assert status["phase"] == "Failed", status
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "BadInput", failed
    assert "no-such-dataset" in status["message"], status["message"]
    pods = job_pods(k8s_cluster, e2e_namespace, status["jobName"])
    assert len(pods) == 1 and terminated(pods[0])["exitCode"] == 1, "exit 1 is never retried"
    events = json.loads(k8s_cluster.kubectl("-n", e2e_namespace, "get", "events", "--field-selector",
                                            "involvedObject.name=render-bad", "-o", "json", check=True).stdout)
    assert any(e["type"] == "Warning" and e["reason"] == "BadInput" for e in events["items"])


def test_gpu_pod_without_a_gpu_falls_back_to_the_cpu(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                     claims: tuple[Path, Path], real_node: str) -> None:
    """A fake nvidia.com/gpu on the real node: the GPU pod lands there on the GPU image,
    finds no usable GPU, exits 75, and the operator re-runs the job on the CPU image."""
    data, out = claims
    patch = lambda value: k8s_cluster.kubectl(  # noqa: E731
        "patch", "node", real_node, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"capacity": {"nvidia.com/gpu": value}}}), check=True)
    patch("1")
    try:
        harness.wait_until(
            lambda: get(k8s_cluster, "", "node", real_node)["status"].get("allocatable", {}).get("nvidia.com/gpu") == "1",
            timeout=60, what="the real node's allocatable nvidia.com/gpu")
        k8s_cluster.apply(render_job("render-fallback", "series.h5", "fallback.h5", device={"policy": "auto"}),
                          namespace=e2e_namespace)
        pods: dict[str, dict[str, Any]] = {}
        seen: list[dict[str, Any]] = []
        status = wait_final(k8s_cluster, e2e_namespace, "renderjob", "render-fallback", timeout=900,
                            pods=pods, watch=seen)["status"]
    finally:
        patch(None)
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert status["device"] == "cpu"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["FellBackToCPU"]["status"] == "True", conditions
    assert conditions["FellBackToCPU"]["reason"] == "GpuUnusable", conditions  # exit 75, not unschedulable
    assert status["attempts"] == 2 and status["jobName"].endswith("-cpu"), status
    # The GPU attempt really ran on the GPU image, on the real node, and ended with 75.
    gpu_pods = [p for p in pods.values() if p["spec"]["containers"][0]["image"].endswith(GPU_IMAGE)]
    assert gpu_pods, (sorted(pods), diagnose(k8s_cluster, e2e_namespace))
    assert all(p["spec"]["nodeName"] == real_node for p in gpu_pods)
    assert {terminated(p).get("exitCode") for p in gpu_pods if terminated(p)} == {75}, [p["status"] for p in gpu_pods]
    with h5py.File(out / "fallback.h5") as h5:
        assert h5["images"].shape[0] == status["result"]["images"] == 81
    events = k8s_cluster.kubectl("-n", e2e_namespace, "get", "events", "--field-selector",
                                 "involvedObject.name=render-fallback", "-o", "json", check=True).stdout
    assert "FellBackToCPU" in events
    # Every attempt kept its log beside the output: the GPU pod's (exit 75) and the CPU pod's.
    kept = {p.name.removesuffix(".log"): p.read_text() for p in (out / "fallback.h5.logs").glob("*.log")}
    assert {p["metadata"]["name"] for p in gpu_pods} <= kept.keys() and len(kept) >= 2, sorted(kept)
    assert status["logRef"] == "pvc://out/fallback.h5.logs"
    # Argo CD's health check (docs/install.md, in gopher-lua) on every status this real run went through.
    from tests.argocd.health import evaluate

    health = evaluate("RenderJob", [{"kind": "RenderJob", "status": s} for s in seen])
    for seen_status, said in zip(seen, health, strict=True):
        phase = seen_status.get("phase")
        want = {"Succeeded": "Healthy", "Failed": "Degraded"}.get(phase or "", "Progressing")
        assert said.get("status") == want, (seen_status, said)
    assert any(s.get("device") == "cpu" and s.get("phase") in ("Pending", "Running") for s in seen), seen


def test_render_pod_deleted_mid_run_resumes(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                            claims: tuple[Path, Path]) -> None:
    data, out = claims
    windows, seq_len = 100_000, 1024  # some 15 s of drawing
    write_series(data, "resume.h5", windows + seq_len - 1, seed=11)
    k8s_cluster.apply(render_job("render-resume", "resume.h5", "resume.h5", backoffLimit=3, seqLen=seq_len,
                                 batchSize=4096), namespace=e2e_namespace)

    def running_pod_with_progress() -> dict[str, Any] | None:
        for pod in k8s_cluster.get("pods", "-n", e2e_namespace)["items"]:
            if not pod["metadata"]["name"].startswith("render-resume-"):
                continue
            report = pod["metadata"].get("annotations", {}).get("gpubatch.dev/progress")
            if pod["status"].get("phase") == "Running" and report and json.loads(report).get("done", 0) > 0:
                return pod
        return None

    pod = harness.wait_until(running_pod_with_progress, timeout=300, interval=0.2,
                             what="the render pod reporting progress")
    first = pod["metadata"]["name"]
    k8s_cluster.kubectl("-n", e2e_namespace, "delete", "pod", first, "--wait=false", check=True)
    status = wait_final(k8s_cluster, e2e_namespace, "renderjob", "render-resume", timeout=900)["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    names = {p["metadata"]["name"] for p in job_pods(k8s_cluster, e2e_namespace, status["jobName"])}
    assert first not in names or len(names) >= 2, names  # another pod finished the work
    with h5py.File(out / "resume.h5") as h5:
        assert h5["images"].shape == (windows, 32, 32)
        assert np.array_equal(np.sort(h5["index"][:]), np.arange(windows))
    # The second pod resumed: it rendered fewer than all the images itself.
    assert "result" in status, f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert status["result"]["images"] == windows
    assert status["result"].get("resumedFrom", 0) > 0, status["result"]


def test_job_pods_run_restricted_under_the_real_runtime(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                        claims: tuple[Path, Path]) -> None:
    """The namespace enforces PodSecurity `restricted`; the runtime really applies it:
    non-root, read-only root filesystem, no capabilities."""
    k8s_cluster.apply(render_job("render-restricted", "series.h5", "restricted.h5"), namespace=e2e_namespace)
    status = wait_final(k8s_cluster, e2e_namespace, "renderjob", "render-restricted")["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    pods = [p for p in job_pods(k8s_cluster, e2e_namespace, status["jobName"])
            if p["status"].get("phase") == "Succeeded"]
    assert pods, diagnose(k8s_cluster, e2e_namespace)
    for pod in pods:
        context = pod["spec"]["containers"][0]["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # What the process itself sees inside a pod on the CPU image, under the same rules.
    probe = harness.PodTemplate("runtime-probe").pod()
    container = probe["spec"]["containers"][0]
    container.update({
        "image": CPU_IMAGE, "imagePullPolicy": "Never",
        "command": ["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status; "
                    "touch /opt/gpubatch/x 2>&1 || true; touch /tmp/x && echo tmp-writable"],
    })
    container["securityContext"]["readOnlyRootFilesystem"] = True
    probe["spec"]["restartPolicy"] = "Never"
    probe["spec"].setdefault("volumes", []).append({"name": "tmp", "emptyDir": {}})
    container.setdefault("volumeMounts", []).append({"name": "tmp", "mountPath": "/tmp"})
    k8s_cluster.apply(probe, namespace=e2e_namespace)
    harness.wait_until(
        lambda: get(k8s_cluster, e2e_namespace, "pod", "runtime-probe")["status"].get("phase") in FINAL,
        timeout=120, what="the runtime probe pod")
    logs = k8s_cluster.kubectl("-n", e2e_namespace, "logs", "runtime-probe", check=True).stdout.splitlines()
    assert logs[0] == "1000" and logs[1] == "1000", logs
    assert logs[2].split() == ["CapEff:", "0000000000000000"], logs
    assert "Read-only file system" in logs[3], logs
    assert logs[4] == "tmp-writable", logs

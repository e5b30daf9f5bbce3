"""`gpubatch submit/get/logs/delete` and the Python client against the real control plane.

The commands run as users run them (subprocesses with the cluster's kubeconfig,
the official `kubernetes` client underneath) against the real kube-apiserver,
with the operator as a process and kwok playing the kubelet: annotations
`gpubatch.dev/test-*` script a pod's exit code, run time and termination
message (the engine's summary). What real pods prove (the engine's log kept
beside its outputs and read back after the Job is gone) is in
tests/e2e/test_submit.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpubatch import Client, GpubatchClientError
from tests.cluster import harness
from tests.operator.operator_process import OperatorProcess, render_job, status_of, wait_for_phase
from tests.unit.test_dashboard import DASHBOARD, metric_names, names_in_scrape, panel_queries

FINAL = {"Succeeded", "Failed"}
PYTHONPATH = os.pathsep.join(str(harness.REPO_ROOT / p) for p in ("jobs", "operator", "."))


def gpubatch(cluster: harness.Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": PYTHONPATH}
    return subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def manifest(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / f"{body['metadata']['name']}.yaml"
    path.write_text(json.dumps(body))
    return str(path)


def scripted(name: str, *, exit_code: int = 0, summary: dict[str, Any] | None = None, seconds: float = 1,
             **spec: Any) -> dict[str, Any]:
    annotations = {harness.RUN_SECONDS_ANNOTATION: str(seconds)}
    if exit_code:
        annotations[harness.EXIT_CODE_ANNOTATION] = str(exit_code)
    if summary is not None:
        annotations[harness.TERMINATION_MESSAGE_ANNOTATION] = json.dumps(summary)
    spec.setdefault("device", {"policy": "cpu"})
    return render_job(name, annotations=annotations, **spec)


@pytest.mark.parametrize(("exit_code", "ok"), [(0, True), (1, False)])
def test_submit_wait_ends_with_the_status_s_result_and_exit_code(k8s_cluster, namespace, operator, tmp_path,
                                                                exit_code, ok):
    name = f"submit-{exit_code}"
    summary = {"kind": "RenderJob", "ok": ok, "exitCode": exit_code, "device": "cpu",
               **({} if ok else {"reason": "BadInput", "message": "spec.input.path: data/series.npy: no such file"})}
    done = gpubatch(k8s_cluster, "submit", manifest(tmp_path, scripted(name, exit_code=exit_code, summary=summary)),
                    "-n", namespace, "--wait")
    status = status_of(k8s_cluster, namespace, "renderjob", name)
    assert done.returncode == exit_code, done.stderr + operator.tail()
    assert status["phase"] == ("Succeeded" if ok else "Failed")
    assert json.loads(done.stdout.strip().splitlines()[-1]) == status["result"] == summary
    assert f"renderjob.gpubatch.dev/{name} created in namespace {namespace}" in done.stderr
    if not ok:
        assert "no such file" in done.stderr


def test_exit_75_without_fallback_ends_submit_with_75(k8s_cluster, namespace, operator, tmp_path):
    summary = {"kind": "RenderJob", "ok": False, "exitCode": 75, "reason": "GpuUnusable", "message": "no GPU"}
    body = scripted("strict-gpu", exit_code=75, summary=summary,
                    device={"policy": "gpu", "fallbackOnGpuFailure": False})
    done = gpubatch(k8s_cluster, "submit", manifest(tmp_path, body), "-n", namespace, "--wait")
    assert done.returncode == 75, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["exitCode"] == 75


def test_the_python_client_waits_for_the_same_result(k8s_cluster, namespace, operator):
    summary = {"kind": "RenderJob", "ok": True, "exitCode": 0, "device": "cpu", "imagesPerSecond": 321.0}
    client = Client(namespace=namespace, kubeconfig=str(k8s_cluster.kubeconfig))
    job = client.submit(scripted("from-python", summary=summary, seconds=2))
    seen: list[dict] = []
    result = job.wait(timeout=120, on_progress=seen.append)
    assert result == summary == job.status["result"] and job.exit_code == 0
    assert seen[-1]["phase"] == "Succeeded" and {e["phase"] for e in seen} >= {"Succeeded"}
    assert job.status["logRef"] == "out/images.h5.logs"  # where every pod keeps its log
    assert client.get("rj/from-python").uid == job.uid
    assert "from-python" in [o["metadata"]["name"] for o in client.list()]
    job.delete(wait=True)
    with pytest.raises(GpubatchClientError, match="no RenderJob named 'from-python'"):
        client.get("renderjob/from-python")


def test_dry_run_is_validated_by_the_api_server_and_creates_nothing(k8s_cluster, namespace, operator, tmp_path):
    path = manifest(tmp_path, scripted("dry"))
    done = gpubatch(k8s_cluster, "submit", path, "-n", namespace, "--dry-run")
    assert done.returncode == 0 and "validated by the API server" in done.stderr, done.stderr
    assert k8s_cluster.kubectl("-n", namespace, "get", "renderjob", "dry").returncode != 0
    missing = gpubatch(k8s_cluster, "submit", path, "-n", "no-such-namespace-25", "--dry-run")
    assert missing.returncode == 1 and "no-such-namespace-25" in missing.stderr
    assert json.loads(missing.stdout.strip().splitlines()[-1])["ok"] is False
    assert gpubatch(k8s_cluster, "submit", path, "-n", namespace, "--no-wait").returncode == 0
    again = gpubatch(k8s_cluster, "submit", path, "-n", namespace, "--dry-run")
    assert again.returncode == 1 and "already exists" in again.stderr and "gpubatch delete dry" in again.stderr
    bad = gpubatch(k8s_cluster, "submit", manifest(tmp_path, {**scripted("bad"), "spec": {"device": {"gpus": 0}}}),
                   "-n", namespace)
    assert bad.returncode == 1 and "spec.device.gpus" in bad.stderr  # refused before the cluster is asked
    gone = gpubatch(k8s_cluster, "delete", "dry", "-n", namespace, "--wait")
    assert gone.returncode == 0 and k8s_cluster.kubectl("-n", namespace, "get", "renderjob", "dry").returncode != 0


def test_a_job_that_cannot_be_scheduled_says_why(k8s_cluster, namespace, operator):
    """16 GPUs on nodes of 4: `gpubatch get` and `kubectl get` show the scheduler's reason;
    with policy auto, also when the job moves to the CPU."""
    k8s_cluster.apply(render_job("too-big", device={"policy": "gpu", "gpus": 16}), namespace=namespace)
    k8s_cluster.apply(render_job("auto-big", device={"policy": "auto", "gpus": 16, "gpuPendingTimeout": "10m"}),
                      namespace=namespace)

    def says(name: str, words: str) -> str | None:
        message = status_of(k8s_cluster, namespace, "renderjob", name).get("message") or ""
        return message if words in message else None

    strict = harness.wait_until(lambda: says("too-big", "Insufficient nvidia.com/gpu"), timeout=60,
                                what="too-big's status.message naming the scheduler's reason")
    assert "unschedulable" in strict
    auto = harness.wait_until(lambda: says("auto-big", "moves to the CPU image at"), timeout=60,
                              what="auto-big's status.message with the fallback time")
    assert "Insufficient nvidia.com/gpu" in auto and "gpuPendingTimeout 600s" in auto
    table = gpubatch(k8s_cluster, "get", "-n", namespace)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()}
    assert lines["NAME"].split() == ["NAME", "KIND", "PHASE", "DEVICE", "PROGRESS", "ETA", "AGE", "MESSAGE"]
    assert "Pending" in lines["too-big"] and "Insufficient nvidia.com/gpu" in lines["too-big"]
    printed = k8s_cluster.kubectl("-n", namespace, "get", "renderjob", "too-big", check=True).stdout
    assert "MESSAGE" in printed and "Insufficient nvidia.com/gpu" in printed  # the printer column
    for name in ("too-big", "auto-big"):
        assert gpubatch(k8s_cluster, "delete", name, "-n", namespace).returncode == 0


def test_progress_eta_and_throughput_reach_status_get_and_metrics(k8s_cluster, namespace, operator: OperatorProcess):
    """The pod reports its rate and ETA in its progress annotation (as the engine does): status,
    `gpubatch get` and the per-job metrics show them, and the dashboard's queries all name
    metrics in this scrape of the operator."""
    k8s_cluster.apply(scripted("eta", seconds=60), namespace=namespace)
    wait_for_phase(k8s_cluster, namespace, "renderjob", "eta", {"Running"})
    (pod,) = k8s_cluster.pods(namespace, "job-name=eta-render")
    event = {"done": 300, "total": 1000, "stage": "render", "perSecond": 25.0, "etaSeconds": 28.0}
    k8s_cluster.kubectl("-n", namespace, "annotate", "pod", pod["metadata"]["name"], "--overwrite",
                        f"gpubatch.dev/progress={json.dumps(event)}", check=True)
    status = harness.wait_until(
        lambda: (s := status_of(k8s_cluster, namespace, "renderjob", "eta")).get("estimatedRemainingSeconds") and s,
        timeout=30, what="status.estimatedRemainingSeconds")
    assert status["estimatedRemainingSeconds"] == 28 and status["throughputPerSecond"] == 25.0
    assert status["progress"] == "30%"
    row = gpubatch(k8s_cluster, "get", "eta", "-n", namespace).stdout.splitlines()[1].split()
    assert row[:6] == ["eta", "RenderJob", "Running", "cpu", "30%", "28s"]
    scrape = operator.metrics()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, s.labels.get("job_namespace"), s.labels.get("name"), s.labels.get("device")): s.value
               for family in text_string_to_metric_families(scrape) for s in family.samples}
    assert samples[("gpubatch_job_throughput_per_second", namespace, "eta", "cpu")] == 25.0
    assert samples[("gpubatch_job_estimated_remaining_seconds", namespace, "eta", "cpu")] == 28
    exported = names_in_scrape(scrape)
    for title, expr in panel_queries(json.loads(DASHBOARD.read_text())):
        assert metric_names(expr) <= exported, f"panel {title!r}: {expr}"
    k8s_cluster.kubectl("-n", namespace, "delete", "renderjob", "eta", "--wait=false")


def test_the_same_commands_as_a_kubectl_plugin(k8s_cluster, namespace, operator, tmp_path):
    """`kubectl gpubatch get`: kubectl finds `kubectl-gpubatch` on PATH (the console script pip
    installs from pyproject's [project.scripts], written here the way pip writes it)."""
    plugin = tmp_path / "bin" / "kubectl-gpubatch"
    plugin.parent.mkdir()
    plugin.write_text(f"#!{sys.executable}\nimport sys\nsys.path[:0] = {PYTHONPATH.split(os.pathsep)!r}\n"
                      "from gpubatch_jobs.cli import kubectl_main\nsys.exit(kubectl_main())\n")
    plugin.chmod(0o755)
    k8s_cluster.apply(scripted("plugin", summary={"ok": True}), namespace=namespace)
    wait_for_phase(k8s_cluster, namespace, "renderjob", "plugin", FINAL)
    env = {**os.environ, "KUBECONFIG": str(k8s_cluster.kubeconfig),
           "PATH": f"{plugin.parent}{os.pathsep}{harness.bin_dir()}{os.pathsep}{os.environ['PATH']}"}
    listed = subprocess.run([str(harness.bin_dir() / "kubectl"), "plugin", "list"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert "kubectl-gpubatch" in listed.stdout
    done = subprocess.run([str(harness.bin_dir() / "kubectl"), "gpubatch", "get", "plugin", "-n", namespace],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "Succeeded" in done.stdout, done.stderr
    started = time.monotonic()
    assert subprocess.run([str(harness.bin_dir() / "kubectl"), "gpubatch", "delete", "plugin", "-n", namespace,
                           "--wait"], env=env, timeout=60, capture_output=True).returncode == 0
    assert time.monotonic() - started < 60

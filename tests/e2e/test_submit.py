"""From a terminal and a notebook to real pods: `gpubatch submit --wait`, `Client().submit().wait()`,
and `gpubatch logs` from the pod while it exists and from the log it kept on its claim after
its Job is gone; the dashboard's queries against a scrape of the operator pod.

The operator is the chart's, a pod on the operator image (tests/e2e/conftest.py);
job pods run the engine from the CPU image on the real node; the claims are
folders of the local-path provisioner read back from the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpubatch import Client
from tests.cluster import harness
from tests.e2e.conftest import CPU_IMAGE, claim_dir, diagnose, get, make_claims
from tests.e2e.test_real_pods import render_job, write_series
from tests.unit.test_dashboard import DASHBOARD, metric_names, names_in_scrape, panel_queries

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

PYTHONPATH = os.pathsep.join(str(harness.REPO_ROOT / p) for p in ("jobs", "operator", "."))


def gpubatch(cluster: harness.Cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": PYTHONPATH, "GPUBATCH_LOG_READER_IMAGE": CPU_IMAGE}
    return subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def claims(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str,
           data_dir: Path) -> tuple[Path, Path]:
    """PVCs `data` (inputs, written here on the host) and `out` (outputs), and their host folders."""
    data = claim_dir(data_dir, e2e_namespace, "data")
    out = claim_dir(data_dir, e2e_namespace, "out")
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    return data, out


def last_json(text: str) -> dict[str, Any]:
    """The last JSON object line (the engine's summary; stderr lines may come after it in a log),
    without its null fields, as status.result holds it (a merge patch cannot store a null)."""
    summary = json.loads(next(line for line in reversed(text.splitlines()) if line.startswith("{")))
    return {key: value for key, value in summary.items() if value is not None}


def pods_of(cluster: harness.Cluster, ns: str, uid: str) -> list[dict[str, Any]]:
    return cluster.get("pods", "-n", ns, "-l", f"gpubatch.dev/owner-uid={uid}")["items"]


def test_submit_wait_then_logs_from_the_pod_and_after_the_job_is_gone(
        k8s_cluster: harness.Cluster, e2e_namespace: str, claims: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = claims
    write_series(data, "series-submit.h5", 3000)
    path = tmp_path / "submit.yaml"
    path.write_text(json.dumps(render_job("submitted", "series-submit.h5", "submit/charts.h5")))
    done = gpubatch(k8s_cluster, "submit", str(path), "-n", e2e_namespace, "--wait", "--follow")
    obj = get(k8s_cluster, e2e_namespace, "renderjob", "submitted")
    status = obj["status"]
    assert done.returncode == 0, f"{done.stderr}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert last_json(done.stdout) == status["result"] and status["phase"] == "Succeeded"
    assert "progress" in done.stdout  # --follow streamed the pod's log (the engine's progress lines) first
    from tests.argocd.health import evaluate

    assert evaluate("RenderJob", [obj])[0]["status"] == "Healthy"
    assert status["logRef"] == "pvc://out/submit/charts.h5.logs"

    # While the pod exists: its log from the kubelet, ending with the engine's summary.
    (pod,) = pods_of(k8s_cluster, e2e_namespace, obj["metadata"]["uid"])
    live = gpubatch(k8s_cluster, "logs", "submitted", "-n", e2e_namespace)
    assert live.returncode == 0, live.stderr
    assert last_json(live.stdout) == status["result"]
    # The same log, kept by the pod on its claim beside the output.
    kept = (out / "submit" / "charts.h5.logs" / f"{pod['metadata']['name']}.log").read_text()
    # Its stdout and stderr, as the kubelet has them (the two streams may interleave differently).
    assert last_json(kept) == status["result"]
    assert set(kept.splitlines()) <= set(live.stdout.splitlines()), "the kept log is the pod's log"

    # The Job and its pod deleted (a TTL, an eviction): the log is read from the claim.
    k8s_cluster.kubectl("-n", e2e_namespace, "delete", "job", status["jobName"], "--cascade=foreground",
                        "--wait=true", check=True, timeout=180)
    harness.wait_until(lambda: not pods_of(k8s_cluster, e2e_namespace, obj["metadata"]["uid"]), timeout=120,
                       what="the job's pods gone")
    stored = gpubatch(k8s_cluster, "logs", "submitted", "-n", e2e_namespace)
    assert stored.returncode == 0, f"{stored.stderr}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert stored.stdout == kept
    assert not [p for p in k8s_cluster.get("pods", "-n", e2e_namespace)["items"]
                if p["metadata"]["name"].startswith("submitted-logs-")], "the reader pod is deleted"


def test_the_python_client_sees_a_failure_through(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                  claims: tuple[Path, Path]) -> None:
    client = Client(namespace=e2e_namespace, kubeconfig=str(k8s_cluster.kubeconfig), reader_image=CPU_IMAGE)
    job = client.submit(render_job("client-missing", "no-such-series.h5", "missing/charts.h5"))
    seen: list[dict[str, Any]] = []
    result = job.wait(timeout=600, on_progress=lambda _: seen.append(job.status))
    status = job.status
    assert status["phase"] == "Failed", diagnose(k8s_cluster, e2e_namespace)
    assert result == status["result"] and result["exitCode"] == 1 == job.exit_code
    assert "no-such-series.h5" in result["message"]
    log = str(job.logs())
    assert "no-such-series.h5" in log and last_json(log) == result
    stored = job.stored_logs()  # every attempt's log: here one pod's
    assert len(stored) == 1 and "no-such-series.h5" in next(iter(stored.values()))
    # Argo CD's health check (docs/install.md, in gopher-lua) on the statuses this real run went through.
    from tests.argocd.health import evaluate

    said = evaluate("RenderJob", [{"kind": "RenderJob", "status": s} for s in [*seen, status]])
    assert said[-1] == {"status": "Degraded", "message": status["message"]}
    assert all(h["status"] == "Progressing" for h, s in zip(said, seen, strict=False) if s.get("phase") != "Failed")
    job.delete(wait=True)


def test_the_dashboard_queries_metrics_the_operator_pod_exports(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                                 operator_release: str) -> None:
    scrape = k8s_cluster.kubectl(
        "get", "--raw",
        f"/api/v1/namespaces/{e2e_namespace}/services/{operator_release}-metrics:metrics/proxy/metrics",
        check=True).stdout
    exported = names_in_scrape(scrape)
    for title, expr in panel_queries(json.loads(DASHBOARD.read_text())):
        assert metric_names(expr) <= exported, f"panel {title!r}: {sorted(metric_names(expr) - exported)}"

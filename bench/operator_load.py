"""Operator benchmark: N gpubatch resources -> N Jobs, against a plain client making the Jobs itself.

    .venv/bin/python bench/operator_load.py               # N=1000 on the test cluster (tests/cluster)
    .venv/bin/python bench/operator_load.py -n 200 --kind TrainJob

Six runs, each in a fresh namespace of the local test cluster (started if it is not up):
  floor       a plain asynchronous client creates the N Jobs the operator would make
              (same bodies, 16 requests in flight): the least time N Jobs take here
  end to end  the operator runs as a subprocess watching its namespace; the same client
              creates N resources; timed from the first create until every Job exists,
              then until every resource reached a final phase. Ratio to the floor: the
              issue 7 target (<= 2x, <= 60 s)
  API floor   the same client creates the N resources and the N Jobs itself, no operator:
              the least time the API work of the end-to-end run takes here (the
              resources' schema validation and defaulting cost the API server more than
              the Jobs do, and on 2 cores every component shares the same CPUs)
  kubectl     `kubectl apply --server-side -f` of one file, as people and GitOps tools
              apply (one request after another): the N Jobs (the floor of this pair),
              then the N resources with the operator up; each timed until every Job exists
  backlog     the N resources exist before the operator starts (installed after a GitOps
              sync, or restarted): timed from its first Job to its last, the operator's
              own pace against the plain client's
Prints the times, the ratios, and the operator's peak RSS (psutil, sampled every 0.1 s;
target <= 150 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "jobs")]

from gpubatch_jobs.contract import API  # noqa: E402
from gpubatch_jobs.kinds import find as job_kind  # noqa: E402
from gpubatch_jobs.spec import parse_spec  # noqa: E402
from gpubatch_operator.builders import JobRequest, build_job  # noqa: E402
from gpubatch_operator.client import KubeClient, namespaced  # noqa: E402
from gpubatch_operator.naming import job_name  # noqa: E402
from gpubatch_operator.settings import Settings  # noqa: E402
from tests.cluster import harness  # noqa: E402

IN_FLIGHT = 16
SPECS: dict[str, dict[str, Any]] = {
    "RenderJob": {"device": {"policy": "cpu"}, "input": {"path": "data/s.npy"}, "output": {"path": "out/i.h5"}},
    "TrainJob": {"device": {"policy": "cpu"}, "model": {"type": "dnn"}, "input": {"path": "data/t.csv"},
                 "output": {"path": "out/m"}},
}


def resources(kind: str, n: int, namespace: str) -> list[dict[str, Any]]:
    return [{"apiVersion": API, "kind": kind,
             "metadata": {"name": f"b{i:05d}", "namespace": namespace}, "spec": SPECS[kind]} for i in range(n)]


def jobs_for(kind: str, n: int, namespace: str) -> list[dict[str, Any]]:
    spec, plugin = parse_spec(kind, SPECS[kind]), job_kind(kind)
    return [build_job(JobRequest(plugin=plugin, name=f"b{i:05d}", namespace=namespace, uid="00000000-bench",
                                 spec=spec, job_name=job_name(f"b{i:05d}", plugin.command), device="cpu"),
                      Settings()) | {"metadata": {
                                     "name": job_name(f"b{i:05d}", plugin.command), "namespace": namespace,
                                     "labels": {"bench": "floor"}}} for i in range(n)]


async def create_all(client: KubeClient, path: str, bodies: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await client.create(path, body)

    await asyncio.gather(*(one(b) for b in bodies))


async def create_pairs(client: KubeClient, kind: str, resources_: list[dict[str, Any]],
                       jobs: list[dict[str, Any]]) -> None:
    """Each resource, then its Job, IN_FLIGHT pairs at a time: what the end-to-end run asks of the API."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    resource_path = namespaced(API, job_kind(kind).plural, resources_[0]["metadata"]["namespace"])
    job_path = namespaced("batch/v1", "jobs", jobs[0]["metadata"]["namespace"])

    async def one(resource: dict[str, Any], job: dict[str, Any]) -> None:
        async with gate:
            await client.create(resource_path, resource)
            await client.create(job_path, job)

    await asyncio.gather(*(one(r, j) for r, j in zip(resources_, jobs, strict=True)))


async def count(client: KubeClient, path: str) -> int:
    page = await client.get(path, {"limit": "1"})
    items = len(page.get("items") or [])
    return items + int((page.get("metadata") or {}).get("remainingItemCount") or 0)


async def wait_count(client: KubeClient, path: str, n: int, timeout: float, every: float = 0.2) -> float:
    deadline = time.perf_counter() + timeout
    while (have := await count(client, path)) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{have}/{n} after {timeout:.0f}s at {path}")
        await asyncio.sleep(every)
    return time.perf_counter()


async def floor_run(cluster: harness.Cluster, kind: str, n: int, *, with_resources: bool = False) -> float:
    namespace = cluster.create_namespace(harness.unique_name("bench-floor"), pod_security=None)
    client = KubeClient()
    try:
        bodies = jobs_for(kind, n, namespace)
        start = time.perf_counter()
        if with_resources:
            await create_pairs(client, kind, resources(kind, n, namespace), bodies)
        else:
            await create_all(client, namespaced("batch/v1", "jobs", namespace), bodies)
        return time.perf_counter() - start
    finally:
        await client.close()
        clear_namespace(cluster, namespace)


def clear_namespace(cluster: harness.Cluster, namespace: str, *, wait: bool = True) -> None:
    """Delete a run's namespace so the next run starts on a quiet cluster. The Jobs go first in
    one request: left to the garbage collector behind their resources, 1,000 of them take
    minutes at kube-controller-manager's default 20 requests/s."""
    cluster.kubectl("-n", namespace, "delete", "jobs", "--all", "--wait=false", timeout=120)
    cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", f"--wait={str(wait).lower()}",
                    "--timeout=600s", check=True, timeout=620)


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.1)


def sample_rss_in_background(pid: int) -> tuple[threading.Event, list[int]]:
    """(set this to stop, [peak RSS in bytes so far])"""
    stop, peak = threading.Event(), [0]
    threading.Thread(target=sample_rss, args=(pid, stop, peak), daemon=True).start()
    return stop, peak


def launch_operator(cluster: harness.Cluster, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**cluster.env, **{k: v for k, v in os.environ.items() if k.startswith("GPUBATCH_")},
           "GPUBATCH_WATCH_NAMESPACES": namespace, "GPUBATCH_METRICS_PORT": "18090",
           "GPUBATCH_HEALTH_PORT": "18091", "GPUBATCH_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "jobs")])}
    return subprocess.Popen([sys.executable, "-m", "gpubatch_operator.main"], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def start_operator(cluster: harness.Cluster, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    process = launch_operator(cluster, namespace, log)
    harness.wait_until(lambda: _healthy(18091), timeout=60, what="the operator's /healthz")
    return process


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


async def operator_run(cluster: harness.Cluster, kind: str, n: int, log: Path, settle_timeout: float
                       ) -> dict[str, float]:
    """End to end: the operator is up and idle; time from the first create until every Job exists."""
    namespace = cluster.create_namespace(harness.unique_name("bench-op"), pod_security=None)
    client = KubeClient()
    process = start_operator(cluster, namespace, log)
    stop, peak = sample_rss_in_background(process.pid)
    try:
        operator = psutil.Process(process.pid)
        idle_rss, idle_cpu = operator.memory_info().rss, sum(operator.cpu_times()[:2])
        plural = job_kind(kind).plural
        start = time.perf_counter()
        await create_all(client, namespaced(API, plural, namespace), resources(kind, n, namespace))
        applied = time.perf_counter() - start
        all_jobs = await wait_count(client, namespaced("batch/v1", "jobs", namespace), n, 600) - start
        print(f"end to end: all {n} Jobs exist after {all_jobs:.2f} s", flush=True)
        jobs_cpu = sum(operator.cpu_times()[:2]) - idle_cpu
        settled_at, final = await _wait_final(client, namespaced(API, plural, namespace), n, settle_timeout)
        return {"applied": applied, "jobs": all_jobs, "settled": settled_at - start, "idle_rss": idle_rss,
                "peak_rss": peak[0], "cpu": jobs_cpu, "final": final}
    finally:
        stop.set()
        _stop(process)
        await client.close()
        clear_namespace(cluster, namespace)


async def kubectl_run(cluster: harness.Cluster, kind: str, n: int, log: Path, *, operator: bool
                      ) -> dict[str, float]:
    """`kubectl apply --server-side -f` of one file of N objects, as users and GitOps tools apply:
    the N Jobs themselves (operator=False, the floor) or the N resources with the operator up.
    Timed from kubectl's start until every Job exists."""
    namespace = cluster.create_namespace(harness.unique_name("bench-kubectl"), pod_security=None)
    client = KubeClient()
    process, stop, peak = None, threading.Event(), [0]
    if operator:
        process = start_operator(cluster, namespace, log)
        stop, peak = sample_rss_in_background(process.pid)
    bodies = resources(kind, n, namespace) if operator else jobs_for(kind, n, namespace)
    manifest = log.parent / f"bench-{'resources' if operator else 'jobs'}.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": bodies}))
    try:
        start = time.perf_counter()
        await asyncio.to_thread(cluster.kubectl, "apply", "--server-side", "-f", str(manifest), "-o", "name",
                                check=True, timeout=600)
        applied = time.perf_counter() - start
        jobs = await wait_count(client, namespaced("batch/v1", "jobs", namespace), n, 600) - start
        what = f"{n} {kind}s, operator up" if operator else f"{n} Jobs"
        print(f"kubectl apply: {what}: all {n} Jobs exist after {jobs:.2f} s", flush=True)
        return {"applied": applied, "jobs": jobs, "peak_rss": peak[0]}
    finally:
        stop.set()
        if process is not None:
            _stop(process)
        await client.close()
        manifest.unlink(missing_ok=True)
        clear_namespace(cluster, namespace)


async def backlog_run(cluster: harness.Cluster, kind: str, n: int, log: Path) -> dict[str, float]:
    """The N resources exist first; the operator starts; time from its first Job to its last."""
    namespace = cluster.create_namespace(harness.unique_name("bench-backlog"), pod_security=None)
    client = KubeClient()
    await create_all(client, namespaced(API, job_kind(kind).plural, namespace), resources(kind, n, namespace))
    start = time.perf_counter()
    process = launch_operator(cluster, namespace, log)
    stop, peak = sample_rss_in_background(process.pid)
    try:
        jobs = namespaced("batch/v1", "jobs", namespace)
        first = await wait_count(client, jobs, 1, 120, every=0.05)
        last = await wait_count(client, jobs, n, 600, every=0.05)
        print(f"backlog: first Job {first - start:.2f} s after the operator started, all {n} after"
              f" {last - start:.2f} s", flush=True)
        return {"startup": first - start, "jobs": last - first, "peak_rss": peak[0]}
    finally:
        stop.set()
        _stop(process)
        await client.close()
        clear_namespace(cluster, namespace, wait=False)  # the last run: nothing left to disturb


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


async def _wait_final(client: KubeClient, path: str, n: int, timeout: float) -> tuple[float, int]:
    """(seconds, resources final): stops at `timeout` without failing, since past the Jobs'
    creation the pace is set by kube-controller-manager's job controller, not the operator."""
    deadline = time.perf_counter() + timeout
    while True:
        items = await client.list_all(path)
        done = sum((i.get("status") or {}).get("phase") in ("Succeeded", "Failed") for i in items)
        if done >= n or time.perf_counter() > deadline:
            return time.perf_counter(), done
        await asyncio.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="resources (and Jobs) to create")
    parser.add_argument("--kind", choices=sorted(SPECS), default="RenderJob")
    parser.add_argument("--settle", type=float, default=120,
                        help="seconds to wait, after the Jobs exist, for every resource to be final")
    parser.add_argument("--log", type=Path, default=REPO / ".bench-output" / "operator.log")
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    cluster = harness.start()
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "charts" / "gpubatch" / "crds"), check=True)
    n, kind = args.n, args.kind
    floor = asyncio.run(floor_run(cluster, kind, n))
    op = asyncio.run(operator_run(cluster, kind, n, args.log, args.settle))
    api_floor = asyncio.run(floor_run(cluster, kind, n, with_resources=True))
    kubectl_floor = asyncio.run(kubectl_run(cluster, kind, n, args.log, operator=False))
    kubectl_op = asyncio.run(kubectl_run(cluster, kind, n, args.log, operator=True))
    backlog = asyncio.run(backlog_run(cluster, kind, n, args.log))
    mb = 1024 * 1024
    report = {
        "n": n, "kind": kind,
        "floor_s": round(floor, 2),
        "end_to_end_s": round(op["jobs"], 2),
        "ratio": round(op["jobs"] / floor, 2),
        "end_to_end_apply_s": round(op["applied"], 2),
        "end_to_end_after_last_apply_s": round(op["jobs"] - op["applied"], 2),
        "api_floor_s": round(api_floor, 2),
        "ratio_to_api_floor": round(op["jobs"] / api_floor, 2),
        "kubectl_floor_s": round(kubectl_floor["jobs"], 2),
        "kubectl_end_to_end_s": round(kubectl_op["jobs"], 2),
        "kubectl_ratio": round(kubectl_op["jobs"] / kubectl_floor["jobs"], 2),
        "backlog_first_to_last_job_s": round(backlog["jobs"], 2),
        "backlog_ratio": round(backlog["jobs"] / floor, 2),
        "backlog_startup_s": round(backlog["startup"], 2),
        "final_resources": int(op["final"]),
        "final_after_s": round(op["settled"], 2),
        "operator_cpu_s_until_all_jobs": round(op["cpu"], 2),
        "operator_idle_rss_mb": round(op["idle_rss"] / mb, 1),
        "operator_peak_rss_mb": round(max(op["peak_rss"], backlog["peak_rss"], kubectl_op["peak_rss"]) / mb, 1),
    }
    print(f"floor: plain client, {n} Jobs                            {floor:7.2f} s")
    print(f"end to end: {n} {kind}s applied -> {n} Jobs (operator up)  {op['jobs']:7.2f} s"
          f"   {report['ratio']:.2f}x the floor (issue 7 target: <= 2x, <= 60 s)")
    print(f"  ... applying the {n} resources took {op['applied']:.2f} s; the last Job followed"
          f" {report['end_to_end_after_last_apply_s']:.2f} s later; the operator used"
          f" {report['operator_cpu_s_until_all_jobs']} s of CPU meanwhile")
    print(f"  ... resources in a final phase: {report['final_resources']}/{n} after {report['final_after_s']:.2f} s"
          " (paced by kube-controller-manager's job controller)")
    print(f"API floor: plain client, {n} {kind}s + {n} Jobs, no operator  {api_floor:7.2f} s"
          f"   end to end = {report['ratio_to_api_floor']:.2f}x this")
    print(f"kubectl apply --server-side: {n} Jobs {kubectl_floor['jobs']:7.2f} s; {n} {kind}s (operator up)"
          f" -> {n} Jobs {kubectl_op['jobs']:7.2f} s   {report['kubectl_ratio']:.2f}x (the last Job"
          f" {kubectl_op['jobs'] - kubectl_op['applied']:.2f} s after kubectl returned)")
    print(f"backlog: {n} {kind}s exist, operator starts: first Job to last {backlog['jobs']:7.2f} s"
          f"   {report['backlog_ratio']:.2f}x the floor (first Job {backlog['startup']:.2f} s after the start)")
    print(f"operator RSS: idle {report['operator_idle_rss_mb']} MB, peak {report['operator_peak_rss_mb']} MB"
          " (target <= 150 MB)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Operator benchmark: N gpubatch resources -> N Jobs, against a plain client making the Jobs itself.

    .venv/bin/python bench/operator.py               # N=1000 on the test cluster (tests/cluster)
    .venv/bin/python bench/operator.py -n 200 --kind TrainJob

Two runs in fresh namespaces of the local test cluster (started if it is not up):
  floor     a plain asynchronous client creates the N Jobs the operator would make
            (same bodies, 16 requests in flight): the least time N Jobs can take here
  operator  the operator runs as a subprocess watching one namespace; the same client
            creates N RenderJobs; timed until every Job exists, then until every
            resource reached a final phase
Prints both times, their ratio, and the operator's peak RSS (psutil, sampled every
0.1 s). Targets (issue 7): 1000 -> 1000 Jobs within 60 s, <= 2x the floor, RSS <= 150 MB.
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

from gpubatch_jobs.spec import parse_spec  # noqa: E402
from gpubatch_operator.builders import JobRequest, build_job  # noqa: E402
from gpubatch_operator.client import KubeClient, namespaced  # noqa: E402
from gpubatch_operator.kinds import job_kind  # noqa: E402
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
    return [{"apiVersion": "gpubatch.dev/v1alpha1", "kind": kind,
             "metadata": {"name": f"b{i:05d}", "namespace": namespace}, "spec": SPECS[kind]} for i in range(n)]


def jobs_for(kind: str, n: int, namespace: str) -> list[dict[str, Any]]:
    spec, plugin = parse_spec(kind, SPECS[kind]), job_kind(kind)
    return [build_job(JobRequest(kind=plugin, name=f"b{i:05d}", namespace=namespace, uid="00000000-bench",
                                 spec=spec, job_name=job_name(f"b{i:05d}", plugin.command), device="cpu",
                                 policy="cpu"), Settings()) | {"metadata": {
                                     "name": job_name(f"b{i:05d}", plugin.command), "namespace": namespace,
                                     "labels": {"bench": "floor"}}} for i in range(n)]


async def create_all(client: KubeClient, path: str, bodies: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await client.create(path, body)

    await asyncio.gather(*(one(b) for b in bodies))


async def count(client: KubeClient, path: str) -> int:
    page = await client.get(path, {"limit": "1"})
    items = len(page.get("items") or [])
    return items + int((page.get("metadata") or {}).get("remainingItemCount") or 0)


async def wait_count(client: KubeClient, path: str, n: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while (have := await count(client, path)) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{have}/{n} after {timeout:.0f}s at {path}")
        await asyncio.sleep(0.2)
    return time.perf_counter()


async def floor_run(cluster: harness.Cluster, kind: str, n: int) -> float:
    namespace = cluster.create_namespace(harness.unique_name("bench-floor"), pod_security=None)
    client = KubeClient()
    try:
        bodies = jobs_for(kind, n, namespace)
        start = time.perf_counter()
        await create_all(client, namespaced("batch/v1", "jobs", namespace), bodies)
        return time.perf_counter() - start
    finally:
        await client.close()
        cluster.delete_namespace(namespace, wait=True)


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.1)


def start_operator(cluster: harness.Cluster, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**cluster.env, **{k: v for k, v in os.environ.items() if k.startswith("GPUBATCH_")}, "GPUBATCH_WATCH_NAMESPACES": namespace, "GPUBATCH_METRICS_PORT": "18090",
           "GPUBATCH_HEALTH_PORT": "18091", "GPUBATCH_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "jobs")])}
    process = subprocess.Popen([sys.executable, "-m", "gpubatch_operator.main"], env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
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
    namespace = cluster.create_namespace(harness.unique_name("bench-op"), pod_security=None)
    client = KubeClient()
    process = start_operator(cluster, namespace, log)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_rss, args=(process.pid, stop, peak), daemon=True)
    sampler.start()
    try:
        idle_rss = psutil.Process(process.pid).memory_info().rss
        plural = job_kind(kind).plural
        start = time.perf_counter()
        await create_all(client, namespaced("gpubatch.dev/v1alpha1", plural, namespace),
                         resources(kind, n, namespace))
        applied = time.perf_counter() - start
        all_jobs = await wait_count(client, namespaced("batch/v1", "jobs", namespace), n, 600) - start
        print(f"operator: all {n} Jobs exist after {all_jobs:.2f} s", flush=True)
        cpu = psutil.Process(process.pid).cpu_times()
        jobs_cpu = cpu.user + cpu.system
        settled_at, final = await _wait_final(client, namespaced("gpubatch.dev/v1alpha1", plural, namespace), n,
                                              settle_timeout)
        settled = settled_at - start
        return {"applied": applied, "jobs": all_jobs, "settled": settled, "idle_rss": idle_rss, "peak_rss": peak[0],
                "cpu": jobs_cpu, "final": final}
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        await client.close()
        cluster.delete_namespace(namespace, wait=False)


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
    floor = asyncio.run(floor_run(cluster, args.kind, args.n))
    op = asyncio.run(operator_run(cluster, args.kind, args.n, args.log, args.settle))
    mb = 1024 * 1024
    report = {
        "n": args.n, "kind": args.kind,
        "floor_s": round(floor, 2),
        "operator_all_jobs_s": round(op["jobs"], 2),
        "ratio": round(op["jobs"] / floor, 2),
        "operator_apply_s": round(op["applied"], 2),
        # The CR creates alone (CEL-validated custom resources) cost more than the Jobs: the
        # operator's own share is the time past the last apply.
        "operator_after_last_apply_s": round(op["jobs"] - op["applied"], 2),
        "operator_final_resources": int(op["final"]),
        "operator_final_after_s": round(op["settled"], 2),
        "operator_cpu_s_until_all_jobs": round(op["cpu"], 2),
        "operator_idle_rss_mb": round(op["idle_rss"] / mb, 1),
        "operator_peak_rss_mb": round(op["peak_rss"] / mb, 1),
    }
    print(f"floor (plain client, {args.n} Jobs):      {report['floor_s']:8.2f} s")
    print(f"operator ({args.n} {args.kind}s -> Jobs):  {report['operator_all_jobs_s']:8.2f} s"
          f"   ratio {report['ratio']:.2f}x (target <= 2x, <= 60 s)")
    print(f"  ... applying the {args.n} resources took {report['operator_apply_s']:.2f} s;"
          f" the last Job followed {report['operator_after_last_apply_s']:.2f} s later")
    print(f"  ... resources in a final phase:      {report['operator_final_resources']}/{args.n}"
          f" after {report['operator_final_after_s']:.2f} s (paced by the job controller)")
    print(f"operator RSS: idle {report['operator_idle_rss_mb']} MB, peak {report['operator_peak_rss_mb']} MB"
          " (target <= 150 MB)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

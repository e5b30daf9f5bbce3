"""The operator as a subprocess against the test cluster: start, SIGKILL, restart.

Each process runs `python -m gpubatch_operator.main` — the same `run()` the
`gpubatch-operator` console script calls — with GPUBATCH_* settings aimed at
one namespace, its own metrics and health ports, and its output in a log file
that a failing test prints.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.cluster import harness

REPO = harness.REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    def __init__(self, kubeconfig: Path, namespace: str, log: Path, **settings: str) -> None:
        self.kubeconfig, self.namespace, self.log = kubeconfig, namespace, log
        self.metrics_port, self.health_port = free_port(), free_port()
        self.settings = {
            "GPUBATCH_WATCH_NAMESPACES": namespace,
            "GPUBATCH_METRICS_PORT": str(self.metrics_port),
            "GPUBATCH_HEALTH_PORT": str(self.health_port),
            "GPUBATCH_PROGRESS_INTERVAL": "1",
            "GPUBATCH_GPU_IMAGE": "registry.invalid/gpubatch/gpu:test",
            "GPUBATCH_CPU_IMAGE": "registry.invalid/gpubatch/cpu:test",
            "GPUBATCH_TEST_HOOKS": "true",  # the kwok pods' fate is scripted by gpubatch.dev/test-* annotations
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.settings,
               "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "jobs"), str(REPO)])}
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            self.process = subprocess.Popen([sys.executable, "-m", "gpubatch_operator.main"], env=env,
                                            stdout=out, stderr=subprocess.STDOUT)
        if wait:
            harness.wait_until(self.healthy, timeout=60, what=f"the operator's /healthz (log: {self.log})")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def render_job(name: str, *, device: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
               **spec: Any) -> dict[str, Any]:
    """A RenderJob manifest with local paths (no claims needed) and optional test-hook annotations."""
    body: dict[str, Any] = {
        "apiVersion": "gpubatch.dev/v1alpha1", "kind": "RenderJob",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"input": {"path": "data/series.npy"}, "output": {"path": "out/images.h5"}, **spec},
    }
    if device is not None:
        body["spec"]["device"] = device
    return body


def status_of(cluster: harness.Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return cluster.get(kind, name, "-n", namespace).get("status") or {}


def wait_for_phase(cluster: harness.Cluster, namespace: str, kind: str, name: str, phases: set[str],
                   timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = status_of(cluster, namespace, kind, name)
        return status if status.get("phase") in phases else None

    return harness.wait_until(probe, timeout=timeout, interval=0.5,
                              what=f"{kind}/{name} in phase {sorted(phases)}")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def events_for(cluster: harness.Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or "")


def dump(cluster: harness.Cluster, namespace: str) -> str:
    """What a failing test prints: resources, Jobs and pods of the namespace."""
    out = cluster.kubectl("get", "renderjobs,trainjobs,predictjobs,jobs,pods", "-n", namespace, "-o", "wide")
    return out.stdout + out.stderr + json.dumps({})

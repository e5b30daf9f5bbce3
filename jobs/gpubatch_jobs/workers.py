"""`gpubatch run --workers N`: a TrainJob's worker group as N local processes.

The laptop twin of the operator's Indexed Job: N processes of `gpubatch run`,
each told every worker's address (loopback ports here, the headless Service's
names in a pod) and its own index, exactly the environment a worker pod gets
(GPUBATCH_WORKER_HOSTS, JOB_COMPLETION_INDEX). The workers talk to each other
with the framework's own engine (TensorFlow's gRPC collectives, JAX's
coordinator); this module only starts and watches them, with the operator's
gang semantics:

- the workers start together; when one fails, the others are stopped and the
  whole group starts again (a new attempt), resuming from the checkpoint worker 0
  wrote, up to spec.backoffLimit restarts;
- exit 1 (bad input) ends the run at once; exit 75 (the GPU is unusable) moves
  the whole group to the CPU when device.fallbackOnGpuFailure allows: never a mix.

Worker 0's progress goes to stderr; the others' logs are kept in a temporary
folder and shown when a worker fails. The last stdout line is worker 0's
summary with the group's record added (`workers.attempts`, `groupRestarts`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubatch_jobs.contract import (
    ENV_COMPLETION_INDEX,
    ENV_WORKER_HOSTS,
    EXIT_BAD_INPUT,
    EXIT_GPU_UNUSABLE,
    EXIT_OK,
)

STOP_GRACE_S = 10.0
POLL_S = 0.2


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now (bound and released)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


@dataclass
class GroupResult:
    code: int
    summary: dict[str, Any] | None
    failed_worker: int | None
    log_tail: str


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker still running, SIGKILL what is left after the grace period."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_attempt(argv: list[str], workers: int, device: str, logs: Path, quiet: bool,
                attempt: int, progress_file: str | None = None) -> GroupResult:
    """Start the N workers of one attempt and wait for all of them, or for the first failure."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(workers))
    procs: list[subprocess.Popen[bytes]] = []
    outputs: list[Path] = []
    for index in range(workers):
        env = {**os.environ, ENV_WORKER_HOSTS: hosts, ENV_COMPLETION_INDEX: str(index)}
        command = [sys.executable, "-m", "gpubatch_jobs.cli", "run", *argv, "--device", device,
                   "--workers", str(workers)]
        if index or quiet:
            command.append("--quiet")
        if index == 0 and progress_file:
            command += ["--progress-file", progress_file]  # the group's progress is worker 0's
        out = logs / f"attempt-{attempt}-worker-{index}.out"
        err = logs / f"attempt-{attempt}-worker-{index}.log"
        outputs.append(out)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            # Worker 0's progress bar and messages go to this terminal; the others' to files.
            procs.append(subprocess.Popen(command, env=env, stdout=stdout,
                                          stderr=None if index == 0 else stderr))
    failed: int | None = None
    try:
        while True:
            codes = [proc.poll() for proc in procs]
            bad = [i for i, c in enumerate(codes) if c not in (None, EXIT_OK)]
            if bad:
                failed = bad[0]
                break
            if all(c == EXIT_OK for c in codes):
                break
            time.sleep(POLL_S)
    finally:
        _stop(procs)  # a failed worker's peers would wait on it forever
    summary = _last_json_line(outputs[0].read_text(errors="replace"))
    if failed is None:
        return GroupResult(EXIT_OK, summary, None, "")
    code = procs[failed].returncode
    failed_summary = _last_json_line(outputs[failed].read_text(errors="replace"))
    log_file = logs / f"attempt-{attempt}-worker-{failed}.log"
    tail = log_file.read_text(errors="replace")[-2000:] if failed and log_file.exists() else ""
    return GroupResult(code if code >= 0 else 128 - code, failed_summary or summary, failed, tail)


def run_group(kind: str, argv: list[str], spec: Any, workers: int, device_override: str | None, quiet: bool,
              progress_file: str | None = None) -> int:
    """Run the group until it succeeds or gives up; print the summary last; return the exit code."""
    from gpubatch_jobs.devices import cuda

    policy = device_override or str(spec.device.policy)
    if policy == "auto":
        device = "gpu" if cuda.probe().gpus else "cpu"
    else:
        device = policy
    restarts, attempt, fell_back = 0, 0, False
    history: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpubatch-workers-") as tmp:
        logs = Path(tmp)
        while True:
            attempt += 1
            result = run_attempt(argv, workers, device, logs, quiet, attempt, progress_file)
            history.append({"attempt": attempt, "device": device, "exitCode": result.code,
                            "failedWorker": result.failed_worker})
            if result.code == EXIT_OK:
                break
            who = f"worker {result.failed_worker}"
            if result.code == EXIT_BAD_INPUT:
                break
            if result.code == EXIT_GPU_UNUSABLE and device == "gpu" and not fell_back and (
                    policy == "auto" or spec.device.fallback_on_gpu_failure):
                print(f"gpubatch: {who} exited 75 (GPU unusable); moving the whole group of {workers} to the CPU",
                      file=sys.stderr)
                device, fell_back = "cpu", True
                continue
            if result.code == EXIT_GPU_UNUSABLE or restarts >= spec.backoff_limit:
                break
            restarts += 1
            print(f"gpubatch: {who} failed (exit {result.code}); restarting the group of {workers} "
                  f"(restart {restarts} of at most {spec.backoff_limit}), resuming from the last checkpoint",
                  file=sys.stderr)
            if result.log_tail:
                print(result.log_tail, file=sys.stderr)
    summary = dict(result.summary or {"ok": False, "kind": kind, "reason": "WorkerFailed",
                                      "message": f"worker {result.failed_worker} failed with exit {result.code}",
                                      "exitCode": result.code})
    group = dict(summary.get("workers") or {"total": workers})
    group.update(groupRestarts=restarts, attempts=history)
    summary["workers"] = group
    if result.code != EXIT_OK and summary.get("ok", True):
        summary.update(ok=False, reason="WorkerFailed", exitCode=result.code,
                       message=f"worker {result.failed_worker} failed with exit {result.code}")
    if result.code != EXIT_OK:
        print(f"error: {summary.get('message')}", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return result.code


__all__ = ["free_ports", "run_group"]

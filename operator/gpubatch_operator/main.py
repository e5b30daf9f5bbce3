"""kopf registrations of the gpubatch operator: thin shims, nothing else.

Run it as `gpubatch-operator` (settings from GPUBATCH_* variables, see
settings.py) or as `kopf run -m gpubatch_operator.main [-A | -n NS...]
[--standalone] [--liveness=http://0.0.0.0:8081/healthz]`.

How it works (docs/architecture.md): kopf watches the three kinds, their Jobs
and pods (server-side label-filtered), the job ServiceAccounts and the nodes; each event updates the store and enqueues the
resource; reconcile workers decide and act (reconciler.py, decide.py) and move
`status` through the state machine (state.py).

Progress: the job pod merge-patches the annotation `gpubatch.dev/progress`
({"done", "total", "stage"}) on its own Pod (gpubatch_jobs.podreport). The
operator already watches those pods, copies the figure into `status.progress`
(e.g. "42%") and writes progress-only changes at most every
GPUBATCH_PROGRESS_INTERVAL seconds. The job pods run as the ServiceAccount
`gpubatch-job` (GPUBATCH_JOB_SERVICE_ACCOUNT), whose Role grants only get and
patch on pods of its own namespace; the operator creates that ServiceAccount,
Role and RoleBinding in each namespace where it launches a Job, if missing.

Test hook (only with GPUBATCH_TEST_HOOKS=true; off by default and in the
chart): annotations of a resource starting with `gpubatch.dev/test-` are
copied onto its pods, so the kwok test cluster can script a pod's fate;
`gpubatch.dev/test-gpu-X` / `gpubatch.dev/test-cpu-X` reach only the GPU / CPU
pods, as `gpubatch.dev/test-X` (e.g. exit 75 on the GPU, succeed on the CPU).
Nothing else of the resource's metadata is copied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf

from gpubatch_jobs.contract import API_GROUP, API_VERSION, JOB_IDENTITY_LABEL
from gpubatch_jobs.kinds import plurals
from gpubatch_operator.client import connection_info
from gpubatch_operator.handlers import lifecycle, watch_events
from gpubatch_operator.naming import MANAGED_BY, MANAGED_BY_LABEL
from gpubatch_operator.settings import Settings

MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}
RESTART_DELAY_S, MAX_RESTART_DELAY_S, STABLE_RUN_S = 1.0, 30.0, 60.0
SHUTDOWN_GRACE_S = 20.0
log = logging.getLogger("gpubatch.operator")
# When kopf's cleanup ran, per kopf start: run() watches how long kopf then takes to stop.
_shutdown_began: list[float] = []


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    await lifecycle.startup(settings, memo)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    _shutdown_began.append(time.monotonic())
    await lifecycle.cleanup(memo)


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    return connection_info(settings)


@kopf.on.probe(id="loops")
def loops_alive(memo: kopf.Memo, **_: Any) -> str:
    """/healthz fails (HTTP 500) when a loop the operator needs has died, so the kubelet restarts it."""
    operator_ctx = memo.get("operator_ctx")
    dead = operator_ctx.dead_loops() if operator_ctx is not None else []
    if dead:
        raise kopf.PermanentError(f"{', '.join(dead)} stopped; the operator must be restarted")
    return "ok"


@kopf.on.probe(id="workqueue")
def workqueue_depth(memo: kopf.Memo, **_: Any) -> int:
    return len(memo["operator_ctx"].reconciler.queue) if "operator_ctx" in memo else 0


async def resource_event(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watch_events.resource_event(memo["operator_ctx"], type, dict(event["object"]))


for _plural in plurals():
    kopf.on.event(API_GROUP, API_VERSION, _plural, id=f"{_plural}-events")(resource_event)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watch_events.job_event(memo["operator_ctx"], type, dict(event["object"]))


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_event(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watch_events.pod_event(memo["operator_ctx"], type, dict(event["object"]))


@kopf.on.event("", "v1", "serviceaccounts", labels={JOB_IDENTITY_LABEL: "true"})
async def service_account_event(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watch_events.service_account_event(memo["operator_ctx"], type, dict(event["object"]))


@kopf.on.event("", "v1", "nodes")
async def node_event(type: str, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    watch_events.node_event(memo["operator_ctx"], type, dict(event["object"]))


class _NoThreadSignalWarning(logging.Filter):
    """kopf warns that it ignores OS signals off the main thread: run() handles them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OS signals are ignored" not in record.getMessage()


def run() -> None:
    """`gpubatch-operator`: kopf with the namespaces, peering and liveness from the settings.

    kopf runs in a thread; the main thread owns SIGTERM/SIGINT (they set kopf's
    stop flag) and restarts kopf, with backoff, when it stops for any other
    reason, e.g. a watch answered with HTTP 410 Gone, which kopf does not retry.
    The level-based reconciler picks up where it was. Should kopf's own
    shutdown hang after such a failure (seen: watchers waiting for a
    re-authentication that never comes), the process replaces itself with a
    fresh one (exec, same PID) after SHUTDOWN_GRACE_S.
    """
    settings = Settings.from_env()
    kopf.configure(verbose=settings.log_level == "DEBUG")
    logging.getLogger("kopf._core.reactor.running").addFilter(_NoThreadSignalWarning())
    health = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    stop = threading.Event()
    # kopf's own stop flag lives in kopf's event loop: a threading.Event flag would
    # park an executor thread in wait() that asyncio.run() then waits for forever.
    stoppers: list[Callable[[], object]] = []

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()
        for stopper in stoppers:
            stopper()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delay = RESTART_DELAY_S
    while not stop.is_set():
        started = time.monotonic()
        failure: list[BaseException] = []
        _shutdown_began.clear()
        stoppers.clear()

        async def operate_async() -> None:
            flag, loop = asyncio.Event(), asyncio.get_running_loop()
            stoppers.append(lambda: loop.call_soon_threadsafe(flag.set))
            if stop.is_set():
                flag.set()
            await kopf.operator(
                standalone=settings.standalone,
                peering_name=settings.peering or None,
                clusterwide=settings.clusterwide,
                namespaces=settings.watch_namespaces,
                liveness_endpoint=health,
                stop_flag=flag,
            )

        def operate(failure: list[BaseException] = failure) -> None:
            try:
                asyncio.run(operate_async())
            except BaseException as err:  # noqa: BLE001 - reported and retried by the main thread
                failure.append(err)

        thread = threading.Thread(target=operate, name="kopf", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            if _shutdown_began and time.monotonic() - _shutdown_began[0] > SHUTDOWN_GRACE_S:
                break
        if thread.is_alive():
            if stop.is_set():
                log.error("kopf did not stop within %.0fs of the signal; exiting", SHUTDOWN_GRACE_S)
                return
            log.error("kopf did not finish stopping within %.0fs; restarting the process", SHUTDOWN_GRACE_S)
            os.execv(sys.executable, sys.orig_argv)
        if stop.is_set():
            return
        if time.monotonic() - started > STABLE_RUN_S:
            delay = RESTART_DELAY_S
        reason = failure[0] if failure else "kopf returned"
        log.error("the operator stopped (%s); starting again in %.0fs", reason, delay)
        if stop.wait(delay):
            return
        delay = min(MAX_RESTART_DELAY_S, delay * 2)


if __name__ == "__main__":
    run()

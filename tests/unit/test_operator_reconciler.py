"""The reconciler's burst behaviour: status writes parked while Jobs are still due, and kopf kept lean."""

from __future__ import annotations

import asyncio

import kopf
import pytest

import gpubatch_operator.main  # noqa: F401 - registers the handlers in kopf's default registry
from gpubatch_operator.client import KubeClient
from gpubatch_operator.handlers.lifecycle import NoDiffBase, tune_kopf
from gpubatch_operator.reconciler import MAX_STATUS_DELAY_S, Reconciler
from gpubatch_operator.settings import Settings
from gpubatch_operator.store import Store

A, B, C = (("RenderJob", "ns", name) for name in ("a", "b", "c"))


def reconciler() -> Reconciler:
    return Reconciler(settings=Settings(), store=Store(), client=KubeClient())


def queued(r: Reconciler) -> list[object]:
    found = []
    while not r.queue._ready.empty():
        found.append(r.queue._ready.get_nowait())
    return found


def test_parked_status_writes_are_released_once_the_last_first_job_exists() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.starting.update({A, B})
        assert r._defer(C, now=100.0)
        assert r._defer(C, now=101.0)  # still parked; no polling re-queue
        assert queued(r) == []
        r._started(A)
        assert queued(r) == []  # B still waits for its Job
        r._started(B)
        assert queued(r) == [C]
        assert not r._defer(C, now=102.0)  # nothing starting any more: write now
        r.queue.close()

    asyncio.run(scenario())


def test_a_parked_write_goes_out_after_the_longest_delay_even_if_a_resource_never_starts() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.starting.add(A)  # e.g. its namespace refuses Jobs, retried with backoff
        assert r._defer(C, now=100.0)
        timer = r.queue._timers[C]
        assert timer.when() - asyncio.get_running_loop().time() == pytest.approx(MAX_STATUS_DELAY_S, abs=0.5)
        assert not r._defer(C, now=100.0 + MAX_STATUS_DELAY_S)
        assert C not in r._deferred_since
        r.queue.close()

    asyncio.run(scenario())


def test_forgetting_a_starting_resource_releases_the_parked_writes() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.starting.add(A)
        assert r._defer(C, now=100.0)
        r.forget(A)  # deleted before its Job was made
        assert queued(r) == [C]
        r.queue.close()

    asyncio.run(scenario())


def test_kopf_keeps_no_diff_base_and_no_handler_needs_one() -> None:
    settings = kopf.OperatorSettings()
    tune_kopf(settings, Settings())
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    registry = kopf.get_default_registry()
    # NoDiffBase is only right while nothing reacts to changes (on.create/update/field/resume):
    # registering such a handler must bring kopf's diff base back.
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    body = kopf.Body({"metadata": {"name": "x"}, "spec": {"a": 1}})
    assert NoDiffBase().build(body=body) == {}
    assert NoDiffBase().fetch(body=body) is None

"""The reconciler's burst behaviour: status writes parked while Jobs are still due, and kopf kept lean."""

from __future__ import annotations

import asyncio
import time

import kopf
import pytest

import gpubatch_operator.main  # noqa: F401 - registers the handlers in kopf's default registry
from gpubatch_operator.client import KubeClient
from gpubatch_operator.handlers.lifecycle import NoDiffBase, tune_kopf
from gpubatch_operator.pacing import BURST_QUIET_S, MAX_STATUS_DELAY_S
from gpubatch_operator.reconciler import Reconciler
from gpubatch_operator.settings import Settings
from gpubatch_operator.store import ResourceView, Store

A, B, C = (("RenderJob", "ns", name) for name in ("a", "b", "c"))


def reconciler() -> Reconciler:
    return Reconciler(settings=Settings(), store=Store(), client=KubeClient())


def queued(r: Reconciler) -> list[object]:
    """Take every ready key, as the workers would (`get` then `done`)."""
    found = []
    while not r.queue._ready.empty():
        key = r.queue._ready.get_nowait()
        r.queue._queued.discard(key)
        found.append(key)
    return found


def test_parked_status_writes_are_released_once_the_last_first_job_exists() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.pacer.starting.update({A, B})
        assert r.pacer.defer(C, now=100.0)
        assert r.pacer.defer(C, now=101.0)  # still parked; no polling re-queue
        assert queued(r) == []
        r.pacer.started(A)
        assert queued(r) == []  # B still waits for its Job
        r.pacer.started(B)
        assert queued(r) == [C]
        assert not r.pacer.defer(C, now=102.0)  # nothing starting any more: write now
        r.queue.close()

    asyncio.run(scenario())


def test_a_parked_write_goes_out_after_the_longest_delay_even_if_a_resource_never_starts() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.pacer.starting.add(A)  # e.g. its namespace refuses Jobs, retried with backoff
        assert r.pacer.defer(C, now=100.0)
        timer = r.queue._timers[C]
        assert timer.when() - asyncio.get_running_loop().time() == pytest.approx(MAX_STATUS_DELAY_S, abs=0.5)
        assert not r.pacer.defer(C, now=100.0 + MAX_STATUS_DELAY_S)
        assert C not in r.pacer.deferred_since
        r.queue.close()

    asyncio.run(scenario())


def test_forgetting_a_starting_resource_releases_the_parked_writes() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.pacer.starting.add(A)
        assert r.pacer.defer(C, now=100.0)
        r.forget(A)  # deleted before its Job was made
        assert queued(r) == [C]
        r.queue.close()

    asyncio.run(scenario())


def view(key: tuple[str, str, str]) -> ResourceView:
    kind, namespace, name = key
    return ResourceView(kind=kind, namespace=namespace, name=name, uid=f"uid-{name}", generation=1,
                        spec={}, status={}, test_annotations={})


def test_a_lone_resource_writes_its_status_at_once() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.note(view(A), now=100.0)
        r.pacer.started(A)
        assert not r.pacer.defer(A, now=100.01)
        r.note(view(B), now=200.0)  # long after A: still alone
        r.pacer.started(B)
        assert not r.pacer.defer(B, now=200.01)
        r.queue.close()

    asyncio.run(scenario())


def test_resources_arriving_one_by_one_park_their_status_until_the_arrivals_stop() -> None:
    """kubectl apply of many files: each resource gets its Job before the next arrives, so
    `starting` drains after every one; their status writes still wait for the burst to end."""
    async def scenario() -> None:
        r = reconciler()
        t = time.time()  # started() reads the clock itself
        r.note(view(A), now=t + 0.0)
        r.pacer.started(A)
        r.note(view(B), now=t + 0.01)
        r.pacer.started(B)
        assert r.pacer.defer(A, now=t + 0.02)
        assert r.pacer.defer(B, now=t + 0.02)
        assert r.pacer._release_timer is not None
        assert queued(r) == [A, B]  # note()'s own enqueues, before the reconciles above
        r.note(view(C), now=t + 0.3)
        r.pacer.started(C)
        r.pacer.release(now=t + 0.31)  # C arrived 0.01 s ago: not yet
        assert queued(r) == [C]  # note()'s own; nothing released
        assert r.pacer._release_timer is not None
        r.pacer.release(now=t + 0.3 + BURST_QUIET_S + 0.01)
        assert set(queued(r)) == {A, B}
        assert not r.pacer.defer(A, now=t + 0.3 + BURST_QUIET_S + 0.02)
        r.queue.close()

    asyncio.run(scenario())


def test_the_release_timer_enqueues_the_parked_keys_once_arrivals_stop() -> None:
    async def scenario() -> None:
        r = reconciler()
        r.note(view(A))
        r.note(view(B))
        r.pacer.started(A)
        r.pacer.started(B)
        assert queued(r) == [A, B]
        assert r.pacer.defer(A, now=time.time())
        await asyncio.sleep(BURST_QUIET_S + 0.3)
        assert queued(r) == [A]
        assert r.pacer._release_timer is None
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

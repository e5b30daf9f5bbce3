"""The one reconciler every kind plugs into (through `kinds.JobKind`).

Workers take resource keys from the work queue, read the world from the
store, let `decide()` choose, carry out its actions against the API, move the
status through the state machine and post one Event per transition. Failures
are retried with a per-key backoff; nothing here raises into kopf. Two jobs
live next door: the pacing of status writes in a burst (pacing.py) and the
job pods' ServiceAccount per namespace (job_rbac.py).

Side effects are ordered for restart safety: a Job is created under its
deterministic name before the status records it (a 409 means it exists
already), and a CPU re-run is created before its GPU Job is deleted.
See docs/architecture.md for the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from gpubatch_jobs.contract import FINAL_PHASES
from gpubatch_jobs.spec import SpecError, parse_spec
from gpubatch_operator import metrics
from gpubatch_operator.builders import JobRequest, build_event, build_job, build_worker_service
from gpubatch_operator.builders.rbac import needs_spark_driver
from gpubatch_operator.client import ApiError, KubeClient, namespaced
from gpubatch_operator.decide import (
    CreateJob,
    DeleteJob,
    Plan,
    World,
    decide,
    iso,
)
from gpubatch_operator.job_rbac import JobRbac
from gpubatch_operator.kinds import API, job_kind
from gpubatch_operator.naming import OWNER_UID_LABEL
from gpubatch_operator.observe import Key
from gpubatch_operator.pacing import StatusPacer
from gpubatch_operator.queue_reason import QueueReasons
from gpubatch_operator.settings import Settings
from gpubatch_operator.state import advance, merge_patch, only_progress_changed
from gpubatch_operator.store import ResourceView, Store
from gpubatch_operator.workqueue import WorkQueue

log = logging.getLogger("gpubatch.operator")


class Retry(Exception):
    """Look at this resource again after `delay` seconds (not an error)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class Reconciler:
    settings: Settings
    store: Store
    client: KubeClient
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    # The status this operator last wrote, per resource: the watch may still
    # deliver older bodies, and nobody else writes status.
    written: dict[Key, dict[str, Any]] = field(default_factory=dict)
    last_write: dict[Key, float] = field(default_factory=dict)
    pacer: StatusPacer = field(init=False)
    job_rbac: JobRbac = field(init=False)
    queue_reasons: QueueReasons = field(init=False)

    def __post_init__(self) -> None:
        self.pacer = StatusPacer(self.queue)
        self.queue_reasons = QueueReasons(self.client)
        self.job_rbac = JobRbac(self.client, self.settings.job_service_account,
                                self.settings.spark_driver_service_account,
                                dict(self.settings.job_service_account_annotations))

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            started = time.perf_counter()
            try:
                await self.reconcile(key)
                self.queue.forget(key)
            except Retry as retry:
                log.debug("%s/%s %s: %s", key[1], key[2], key[0], retry)
                self.queue.add_after(key, retry.delay)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - a worker must survive anything
                metrics.RECONCILE_ERRORS.labels(key[0]).inc()
                delay = self.queue.backoff(key)
                log.warning("%s %s/%s: %s; retrying in %.1fs", key[0], key[1], key[2], err, delay)
                self.queue.add_after(key, delay)
            finally:
                metrics.RECONCILE_SECONDS.labels(key[0]).observe(time.perf_counter() - started)
                self.queue.done(key)

    def forget(self, key: Key) -> None:
        self.written.pop(key, None)
        self.last_write.pop(key, None)
        self.pacer.forget(key)

    def rbac_lost(self, namespace: str) -> None:
        """The job ServiceAccount of `namespace` was deleted: look again at every unfinished resource there."""
        self.job_rbac.lost(namespace)
        for key, view in list(self.store.resources.items()):
            if view.namespace == namespace and view.status.get("phase") not in FINAL_PHASES:
                self.queue.add(key)

    def note(self, view: ResourceView, now: float | None = None) -> None:
        """A resource event arrived: remember whether it still needs its first Job, and enqueue it."""
        if not view.status.get("jobName") and view.key not in self.written:
            self.pacer.arrived(view.key, now)
        self.queue.add(view.key)

    def world(self, view: ResourceView, status: dict[str, Any]) -> World:
        kind = job_kind(view.kind)
        try:
            spec, error = parse_spec(view.kind, view.spec, source=f"{view.kind} {view.name}"), None
        except SpecError as err:
            spec, error = None, "; ".join(err.problems)
        jobs, pods = self.store.children(view.uid)
        return World(
            job_kind=kind, name=view.name, namespace=view.namespace, uid=view.uid, generation=view.generation,
            spec=spec, spec_error=error, status=status, jobs=jobs, pods=pods,
            gpu_nodes=self.store.gpu_node_count(), now=time.time(),
            default_policy=self.settings.default_device_policy,
            default_pending_timeout=self.settings.default_gpu_pending_timeout,
            gpu_resource=self.settings.gpu_resource,
        )

    async def reconcile(self, key: Key) -> None:
        view = self.store.resources.get(key)
        if view is None:
            self.forget(key)
            return
        written = self.written.get(key)
        status = written if written is not None and written.get("_uid") == view.uid else view.status
        status = {k: v for k, v in status.items() if k != "_uid"}
        world = self.world(view, status)
        held = [j for j in world.jobs if j.owner_uid == view.uid and j.suspended and not j.deleting]
        if held and world.spec is not None and world.spec.queue_name and status.get("phase") not in FINAL_PHASES:
            world = replace(world, queue_message=await self.queue_reasons.reason(view.namespace, held[-1].uid))
        plan = decide(world)
        spark_driver = world.spec is not None and needs_spark_driver(world.spec)
        if world.spec is not None and status.get("phase") not in FINAL_PHASES and (
                plan.actions or not self.job_rbac.known(view.namespace, spark_driver)):
            # Before a Job is made, and again after the ServiceAccount was lost while one runs.
            await self.job_rbac.ensure(view.namespace, spark_driver)
        for action in plan.actions:
            await self._act(view, world, action)
        if plan.outcome is not None:
            self.pacer.started(key)
            await self._write_status(view, status, plan)
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after)

    async def _act(self, view: ResourceView, world: World, action: CreateJob | DeleteJob) -> None:
        path = namespaced("batch/v1", "jobs", view.namespace)
        if isinstance(action, DeleteJob):
            try:
                await self.client.delete(f"{path}/{action.job_name}", propagation=action.propagation)
            except ApiError as err:
                if not err.not_found:
                    raise
            return
        assert world.spec is not None
        request = JobRequest(
            job_kind=world.job_kind, name=view.name, namespace=view.namespace, uid=view.uid, spec=world.spec,
            job_name=action.job_name, device=action.device,
            attempt=action.attempt, test_hooks=view.test_annotations,
        )
        if world.job_kind.workers(world.spec) > 1:
            await self._ensure_worker_service(request)
        try:
            created = await self.client.create(path, build_job(request, self.settings))
        except ApiError as err:
            if not err.already_exists:
                raise
            await self._check_owner(view, action.job_name)
            return
        self.store.put_job(created)
        metrics.JOB_CREATIONS.labels(view.kind, action.device).inc()
        if action.fallback_reason:
            metrics.FALLBACKS.labels(view.kind, action.fallback_reason).inc()

    async def _ensure_worker_service(self, request: JobRequest) -> None:
        """The worker group's headless Service, before its pods need their names (409: it exists)."""
        try:
            await self.client.create(namespaced("v1", "services", request.namespace), build_worker_service(request))
        except ApiError as err:
            if not err.already_exists:
                raise

    async def _check_owner(self, view: ResourceView, job_name: str) -> None:
        """A 409 for a Job of an earlier resource with the same name: wait for its garbage collection."""
        existing = await self.client.get(namespaced("batch/v1", "jobs", view.namespace, job_name))
        owner = (existing.get("metadata", {}).get("labels") or {}).get(OWNER_UID_LABEL)
        if owner != view.uid:
            raise Retry(f"Job {job_name} still belongs to a deleted {view.kind} of the same name", 2.0)
        self.store.put_job(existing)

    async def _write_status(self, view: ResourceView, status: dict[str, Any], plan: Plan) -> None:
        assert plan.outcome is not None
        now = time.time()
        new, transitions = advance(status, plan.outcome, generation=view.generation, now=iso(now))
        patch = merge_patch(status, new)
        if not patch:
            return
        if self.pacer.defer(view.key, now):
            return
        if only_progress_changed(status, new):
            wait = self.last_write.get(view.key, 0.0) + self.settings.progress_interval_s - now
            if wait > 0:
                self.queue.add_after(view.key, wait)
                return
        path = namespaced(API, job_kind(view.kind).plural, view.namespace, view.name, "status")
        await self.client.merge_patch(path, {"status": patch})
        self.written[view.key] = {**new, "_uid": view.uid}
        self.last_write[view.key] = now
        for transition in transitions:
            await self._post_event(view, transition.condition, transition.reason, transition.message,
                                   transition.warning, now)

    async def _post_event(self, view: ResourceView, condition: str, reason: str, message: str,
                          warning: bool, now: float) -> None:
        event = build_event(
            kind=view.kind, name=view.name, namespace=view.namespace, uid=view.uid,
            event_type="Warning" if warning else "Normal", reason=reason or condition,
            message=f"{condition}: {message}", now=iso(now),
        )
        try:
            await self.client.create(namespaced("v1", "events", view.namespace), event)
        except ApiError as err:  # Events are best effort: never retry a reconcile for one.
            log.info("could not post an Event for %s/%s: %s", view.namespace, view.name, err)

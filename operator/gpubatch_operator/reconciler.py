"""The one reconciler every kind plugs into (through its plug-in, gpubatch_jobs/kinds/).

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
import dataclasses
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from gpubatch_jobs import kinds
from gpubatch_jobs.contract import API, API_GROUP, API_REFUSED, FINAL_PHASES, NAME_TAKEN
from gpubatch_jobs.errors import safe_message
from gpubatch_jobs.spec import SpecError, parse_spec
from gpubatch_operator import metrics, policy
from gpubatch_operator.builders import (
    JobRequest,
    build_event,
    build_job,
    build_worker_network_policy,
    build_worker_service,
)
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
from gpubatch_operator.observe import Key, controller, our_kinds
from gpubatch_operator.pacing import StatusPacer
from gpubatch_operator.queue_reason import QueueReasons
from gpubatch_operator.settings import Settings
from gpubatch_operator.state import advance, merge_patch, only_progress_changed
from gpubatch_operator.store import ResourceView, Store
from gpubatch_operator.workqueue import WorkQueue

log = logging.getLogger("gpubatch.operator")


class Permanent(Exception):
    """The API server refused a child for good (422), or its name is held by an object we did
    not make (a foreign 409): the resource fails with this reason; retrying cannot help."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


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
    # Resources that met a permanent API error: (reason, message), until they are gone.
    refused: dict[Key, tuple[str, str]] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    pacer: StatusPacer = field(init=False)
    job_rbac: JobRbac = field(init=False)
    queue_reasons: QueueReasons = field(init=False)

    def __post_init__(self) -> None:
        self.pacer = StatusPacer(self.queue)
        self.queue_reasons = QueueReasons(self.client)
        self.job_rbac = JobRbac(self.client, self.settings.job_service_account,
                                self.settings.spark_driver_service_account,
                                dict(self.settings.job_service_account_annotations),
                                job_cluster_role=self.settings.job_cluster_role,
                                spark_driver_cluster_role=self.settings.spark_driver_cluster_role)

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
        self.refused.pop(key, None)
        self.written.pop(key, None)
        self.last_write.pop(key, None)
        self.pacer.forget(key)

    def namespace_emptied(self, namespace: str) -> None:
        """Remove the job identities of a namespace that has no gpubatch resource left (in the background)."""
        async def release() -> None:
            try:
                await self.job_rbac.release(namespace)
            except Exception as err:  # noqa: BLE001 - best effort; uninstall removes them anyway
                log.warning("could not remove the job identities of %s: %s", namespace, err)
            finally:
                self._background.discard(task)

        task = asyncio.get_running_loop().create_task(release())
        self._background.add(task)

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
        plugin = kinds.find(view.kind)
        try:
            spec, error = parse_spec(view.kind, view.spec, source=f"{view.kind} {view.name}"), None
        except SpecError as err:
            spec, error = None, "; ".join(err.problems)
        jobs, pods = self.store.children(view.uid, view.namespace)
        refusal = self.refused.get(view.key)
        if refusal is None and spec is not None and not jobs and not status.get("jobName"):
            refusal = policy.refusal(view.name, spec, self.settings)  # before anything is made for it
        return World(
            refusal=refusal,
            plugin=plugin, name=view.name, namespace=view.namespace, uid=view.uid, generation=view.generation,
            spec=spec, spec_error=error, status=status, jobs=jobs, pods=pods,
            departed=self.store.departed_pods(view.uid),
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
        spark_driver = world.spec is not None and world.plugin.is_spark_driver(world.spec)
        if world.spec is not None and world.refusal is None and status.get("phase") not in FINAL_PHASES and (
                plan.actions or not self.job_rbac.known(view.namespace, spark_driver)):
            # Before a Job is made, and again after the ServiceAccount was lost while one runs.
            await self.job_rbac.ensure(view.namespace, spark_driver)
        try:
            for action in plan.actions:
                await self._act(view, world, action)
        except Permanent as err:
            log.warning("%s %s/%s: %s", view.kind, view.namespace, view.name, err.message)
            self.refused[key] = (err.reason, safe_message(err.message))
            plan = decide(self.world(view, status))
        except ApiError as err:
            if err.status != 422:  # 422: the API server will never take this object
                raise
            self.refused[key] = (API_REFUSED, safe_message(f"the API server refused what the operator made for "
                                                          f"this resource: {err.message}"))
            plan = decide(self.world(view, status))
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
            plugin=world.plugin, name=view.name, namespace=view.namespace, uid=view.uid, spec=world.spec,
            job_name=action.job_name, device=action.device,
            attempt=action.attempt, test_hooks=view.test_annotations,
        )
        if world.plugin.group_size(world.spec) > 1:
            await self._ensure_owned(request, namespaced("v1", "services", view.namespace), "Service",
                                     build_worker_service(request))
            await self._ensure_owned(request, namespaced("networking.k8s.io/v1", "networkpolicies", view.namespace),
                                     "NetworkPolicy", build_worker_network_policy(request))
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

    async def _ensure_owned(self, request: JobRequest, path: str, kind: str, body: dict[str, Any]) -> None:
        """Create a child of the worker group (its headless Service, its NetworkPolicy) before its
        pods need it. A 409 is fine only when the object is ours (this resource controls it):
        a `NAME-workers` Service made by someone else would take the group's address."""
        try:
            await self.client.create(path, body)
        except ApiError as err:
            if not err.already_exists:
                raise
            name = body["metadata"]["name"]
            existing = await self.client.get(f"{path}/{name}")
            await self._judge_owner(request.plugin.kind, request.name, request.uid, kind, name, existing)

    async def _check_owner(self, view: ResourceView, job_name: str) -> None:
        """A 409 for our Job name: ours (a restart), an earlier resource's of the same name (wait
        for its garbage collection), or someone else's (the resource fails, naming it)."""
        existing = await self.client.get(namespaced("batch/v1", "jobs", view.namespace, job_name))
        await self._judge_owner(view.kind, view.name, view.uid, "Job", job_name, existing)
        self.store.put_job(existing)

    @staticmethod
    async def _judge_owner(kind: str, name: str, uid: str, child_kind: str, child: str,
                           existing: dict[str, Any]) -> None:
        meta = existing.get("metadata", {})
        owner = controller(meta, our_kinds(), API_GROUP)
        if owner is not None and owner[0] == uid:
            return
        if owner is not None and owner[1] == name and any(
                ref.get("kind") == kind and ref.get("uid") == owner[0] for ref in meta.get("ownerReferences") or []):
            raise Retry(f"{child_kind} {child} still belongs to a deleted {kind} of the same name", 2.0)
        raise Permanent(NAME_TAKEN, f"{child_kind} {child} exists already and was not made by the operator for "
                                    f"this {kind}; delete or rename it, or give the {kind} another name")

    async def _write_status(self, view: ResourceView, status: dict[str, Any], plan: Plan) -> None:
        assert plan.outcome is not None
        now = time.time()
        # What reaches status.message and the Events: printable and short, whatever a pod reported.
        outcome = dataclasses.replace(plan.outcome, message=safe_message(plan.outcome.message))
        new, transitions = advance(status, outcome, generation=view.generation, now=iso(now))
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
        path = namespaced(API, kinds.find(view.kind).plural, view.namespace, view.name, "status")
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

"""Startup and cleanup: settings, kopf tuning, the store primed, the workers started.

kopf persists nothing on our objects: only event-watching handlers are
registered, so there is no handler progress or last-handled-configuration
annotation to write, no finalizer, and the status belongs to the state
machine alone. The per-object state lives in `status` (what a restarted
operator needs) and in the store (rebuilt from the watches).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import kopf

from gpubatch_jobs.contract import JOB_IDENTITY_SELECTOR
from gpubatch_operator import metrics
from gpubatch_operator.client import ApiError, KubeClient, cluster_path
from gpubatch_operator.leader import RETRY_S, LeaderElection
from gpubatch_operator.naming import MANAGED_SELECTOR
from gpubatch_operator.reconciler import Reconciler
from gpubatch_operator.settings import Settings
from gpubatch_operator.store import Store

log = logging.getLogger("gpubatch.operator")


@dataclass
class OperatorContext:
    """Everything the handlers share, kept in kopf's `memo`."""

    settings: Settings
    store: Store
    reconciler: Reconciler
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    election: LeaderElection | None = None
    election_task: asyncio.Task[None] | None = None

    def start_workers(self) -> None:
        """Reconcile: at startup, or when this replica becomes the leader (every known resource, again)."""
        if self.tasks:
            return
        self.tasks = [asyncio.create_task(self.reconciler.worker()) for _ in range(self.settings.reconcile_workers)]
        for key in list(self.store.resources):
            self.reconciler.queue.add(key)

    def dead_loops(self) -> list[str]:
        """The loops this operator needs that have ended on their own (an uncaught error): /healthz goes red."""
        dead = []
        if self.election_task is not None and self.election_task.done():
            dead.append("leader election")
        if any(task.done() for task in self.tasks):
            dead.append("reconcile workers")
        return dead

    def stop_workers(self) -> None:
        """Another replica leads now: no more Jobs or status writes from this one."""
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        self.reconciler.written.clear()  # the next leader writes; what this one wrote may be stale later


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled state" at all.

    kopf deep-copies every watched body into an essence for change-detecting
    handlers (on.create/on.update/on.field), even when none is registered; with
    event-watching handlers only, that copy is never read and was a quarter of
    the operator's CPU in a burst (bench/operator_load.py). Nothing is written to
    the objects either way.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def tune_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    # Our Events are posted by the reconciler, one per transition; kopf posts only its own trouble.
    kopf_settings.posting.level = logging.WARNING
    # Server-side filters: only our Jobs and their pods travel over the watch.
    kopf_settings.watching.label_selectors["batch", "jobs"] = MANAGED_SELECTOR
    kopf_settings.watching.label_selectors["pods"] = MANAGED_SELECTOR
    kopf_settings.watching.label_selectors["serviceaccounts"] = JOB_IDENTITY_SELECTOR
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 10
    kopf_settings.networking.request_timeout = 30
    if settings.peering:
        kopf_settings.peering.name = settings.peering
    kopf_settings.peering.standalone = settings.standalone


async def prime(store: Store, client: KubeClient, settings: Settings) -> None:
    """Load nodes, Jobs and pods once so the first reconciles see what exists already."""
    for node in await client.list_all(cluster_path("v1", "nodes")):
        store.put_node(node, settings.gpu_resource)
    store.nodes_known = True
    for namespace in settings.watch_namespaces or (None,):
        for job in await client.list_all(cluster_path("batch/v1", "jobs", namespace), label_selector=MANAGED_SELECTOR):
            store.put_job(job)
        for pod in await client.list_all(cluster_path("v1", "pods", namespace), label_selector=MANAGED_SELECTOR):
            store.put_pod(pod)


async def startup(kopf_settings: kopf.OperatorSettings, memo: kopf.Memo, settings: Settings | None = None) -> OperatorContext:
    settings = settings or Settings.from_env()
    logging.getLogger("gpubatch").setLevel(settings.log_level)
    # kopf logs every handled event at INFO: thousands of lines per burst, and CPU.
    if settings.log_level != "DEBUG":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    tune_kopf(kopf_settings, settings)
    store = Store()
    client = KubeClient()
    reconciler = Reconciler(settings=settings, store=store, client=client)
    try:
        await prime(store, client, settings)
    except ApiError as err:
        await client.close()
        raise kopf.TemporaryError(f"cannot list nodes, Jobs and pods yet: {err}", delay=5) from err
    operator_ctx = OperatorContext(settings, store, reconciler)
    if settings.leader_election:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"
        operator_ctx.election = LeaderElection(
            client, settings.leader_election_namespace, settings.leader_election_lease, identity,
            on_started=operator_ctx.start_workers, on_stopped=operator_ctx.stop_workers,
            lease_s=settings.lease_s, renew_s=settings.lease_s / 3, retry_s=min(RETRY_S, settings.lease_s / 5),
        )
        operator_ctx.election_task = asyncio.create_task(operator_ctx.election.run())
    else:
        operator_ctx.start_workers()
    metrics.serve(settings.metrics_port, store, lambda: len(reconciler.queue))
    memo["operator_ctx"] = operator_ctx
    log.info(
        "gpubatch operator started: %s, %d GPU node(s), %d Job(s) known",
        "all namespaces" if settings.clusterwide else ", ".join(settings.watch_namespaces),
        len(store.gpu_nodes), sum(len(j) for j in store.jobs.values()),
    )
    return operator_ctx


async def cleanup(memo: kopf.Memo) -> None:
    operator_ctx: OperatorContext | None = memo.get("operator_ctx")
    if operator_ctx is None:
        return
    if operator_ctx.election_task is not None:  # lets go of the Lease: another replica takes over at once
        operator_ctx.election_task.cancel()
        await asyncio.gather(operator_ctx.election_task, return_exceptions=True)
    tasks = operator_ctx.tasks
    operator_ctx.stop_workers()
    await asyncio.gather(*tasks, return_exceptions=True)
    operator_ctx.reconciler.queue.close()
    await operator_ctx.reconciler.client.close()

"""Watch events in, store updated, the concerned resource enqueued: nothing else.

Every handler is cheap and never talks to the API; the reconcile workers do.
Many events about one resource collapse into one reconcile in the work queue.
"""

from __future__ import annotations

from typing import Any

from gpubatch_operator.handlers.lifecycle import Runtime


def resource_event(runtime: Runtime, event_type: str | None, body: dict[str, Any]) -> None:
    deleted = event_type == "DELETED"
    key = runtime.store.put_resource(body, deleted=deleted)
    if deleted:
        runtime.reconciler.forget(key)
    else:
        runtime.reconciler.note(runtime.store.resources[key])


def job_event(runtime: Runtime, event_type: str | None, body: dict[str, Any]) -> None:
    key = runtime.store.owner(runtime.store.put_job(body, deleted=event_type == "DELETED"))
    if key is not None:
        runtime.reconciler.queue.add(key)


def pod_event(runtime: Runtime, event_type: str | None, body: dict[str, Any]) -> None:
    key = runtime.store.owner(runtime.store.put_pod(body, deleted=event_type == "DELETED"))
    if key is not None:
        runtime.reconciler.queue.add(key)


def node_event(runtime: Runtime, event_type: str | None, body: dict[str, Any]) -> None:
    had_gpus = bool(runtime.store.gpu_nodes)
    runtime.store.put_node(body, runtime.settings.gpu_resource, deleted=event_type == "DELETED")
    if had_gpus != bool(runtime.store.gpu_nodes):
        # Only resources still waiting for their first Job care about GPU nodes.
        for key, view in list(runtime.store.resources.items()):
            if not view.status.get("jobName"):
                runtime.reconciler.queue.add(key)

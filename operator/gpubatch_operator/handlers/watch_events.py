"""Watch events in, store updated, the concerned resource enqueued: nothing else.

Every handler is cheap and never talks to the API; the reconcile workers do.
Many events about one resource collapse into one reconcile in the work queue.
"""

from __future__ import annotations

from typing import Any

from gpubatch_operator.handlers.lifecycle import OperatorContext


def resource_event(operator_ctx: OperatorContext, event_type: str | None, body: dict[str, Any]) -> None:
    deleted = event_type == "DELETED"
    key = operator_ctx.store.put_resource(body, deleted=deleted)
    if deleted:
        operator_ctx.reconciler.forget(key)
        if operator_ctx.tasks and operator_ctx.store.namespace_empty(key[1]):
            # The leader only: the last gpubatch resource of the namespace is gone, and with it
            # every reason for the job identities there.
            operator_ctx.reconciler.namespace_emptied(key[1])
    else:
        operator_ctx.reconciler.note(operator_ctx.store.resources[key])


def job_event(operator_ctx: OperatorContext, event_type: str | None, body: dict[str, Any]) -> None:
    key = operator_ctx.store.owner(operator_ctx.store.put_job(body, deleted=event_type == "DELETED"))
    if key is not None:
        operator_ctx.reconciler.queue.add(key)


def pod_event(operator_ctx: OperatorContext, event_type: str | None, body: dict[str, Any]) -> None:
    key = operator_ctx.store.owner(operator_ctx.store.put_pod(body, deleted=event_type == "DELETED"))
    if key is not None:
        operator_ctx.reconciler.queue.add(key)


def node_event(operator_ctx: OperatorContext, event_type: str | None, body: dict[str, Any]) -> None:
    had_gpus = bool(operator_ctx.store.gpu_nodes)
    operator_ctx.store.put_node(body, operator_ctx.settings.gpu_resource, deleted=event_type == "DELETED")
    if had_gpus != bool(operator_ctx.store.gpu_nodes):
        # Only resources still waiting for their first Job care about GPU nodes.
        for key, view in list(operator_ctx.store.resources.items()):
            if not view.status.get("jobName"):
                operator_ctx.reconciler.queue.add(key)


def service_account_event(operator_ctx: OperatorContext, event_type: str | None, body: dict[str, Any]) -> None:
    """Our job ServiceAccount deleted (by hand, by a namespace cleanup): create it again where jobs run."""
    meta = body.get("metadata", {})
    if event_type == "DELETED" and meta.get("name") == operator_ctx.settings.job_service_account:
        operator_ctx.reconciler.rbac_lost(meta.get("namespace", ""))

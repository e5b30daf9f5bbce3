"""A core/v1 Event about a gpubatch resource (shown by `kubectl describe`)."""

from __future__ import annotations

from typing import Any

from gpubatch_jobs.contract import API

COMPONENT = "gpubatch-operator"


def build_event(
    *, kind: str, name: str, namespace: str, uid: str, event_type: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": API, "kind": kind, "name": name, "namespace": namespace, "uid": uid},
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }

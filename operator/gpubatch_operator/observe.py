"""Compact, read-only views of the child Jobs and Pods, parsed from watch events.

The operator keeps one small view per object instead of the raw body: a few
hundred bytes rather than several kilobytes, which is what keeps its memory
flat with thousands of jobs. Parsing is pure and tested on plain dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpubatch_jobs.contract import (
    CONTAINER_NAME,
    DEVICE_LABEL,
    OWNER_UID_LABEL,
    PROGRESS_ANNOTATION,
)

Key = tuple[str, str, str]  # (kind, namespace, name) of a gpubatch resource


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def owner_uid(metadata: dict[str, Any]) -> str | None:
    """The UID of the gpubatch resource a Job or Pod belongs to (its owner-uid label)."""
    return (metadata.get("labels") or {}).get(OWNER_UID_LABEL) or None


@dataclass(frozen=True, slots=True)
class JobView:
    name: str
    owner_uid: str
    device: str
    complete: bool
    failed: bool
    failed_reason: str
    failed_message: str  # the Job controller's words: for people, never parsed
    failed_since: float | None
    suspended: bool
    suspended_since: float | None  # since when the Job waits suspended (for Kueue's admission)
    start_time: str | None
    completion_time: str | None
    deleting: bool
    uid: str = ""  # what Kueue files the Job's Workload under (label kueue.x-k8s.io/job-uid)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> JobView:
        meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failure = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        labels = meta.get("labels") or {}
        return cls(
            name=meta.get("name", ""),
            owner_uid=labels.get(OWNER_UID_LABEL, ""),
            device=labels.get(DEVICE_LABEL, ""),
            complete="Complete" in conditions,
            failed=bool(failure),
            failed_reason=failure.get("reason", ""),
            failed_message=failure.get("message", ""),
            failed_since=parse_time(failure.get("lastTransitionTime")),
            suspended=bool(spec.get("suspend")),
            suspended_since=_suspended_since(meta, status) if spec.get("suspend") else None,
            start_time=status.get("startTime"),
            completion_time=status.get("completionTime"),
            deleting=bool(meta.get("deletionTimestamp")),
            uid=meta.get("uid", ""),
        )


def _suspended_since(meta: dict[str, Any], status: dict[str, Any]) -> float | None:
    """The Job controller's Suspended condition (re-set when Kueue evicts an admitted Job),
    else the Job's creation: a Job created suspended waits from then."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Suspended" and condition.get("status") == "True":
            since = parse_time(condition.get("lastTransitionTime"))
            if since is not None:
                return since
    return parse_time(meta.get("creationTimestamp"))


@dataclass(frozen=True, slots=True)
class PodView:
    name: str
    job_name: str
    owner_uid: str
    phase: str
    unschedulable_since: float | None
    unschedulable_message: str
    exit_code: int | None
    termination_message: str
    progress: tuple[int, int] | None
    completion_index: int | None
    # The engine's own measure of its current stage: items per second and seconds left.
    per_second: float | None = None
    eta_seconds: float | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> PodView:
        meta, status = body.get("metadata", {}), body.get("status") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        scheduled: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
        unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        exit_code, message = None, ""
        for container in status.get("containerStatuses") or []:
            if container.get("name") != CONTAINER_NAME:
                continue
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                exit_code, message = terminated.get("exitCode"), terminated.get("message") or ""
        index = annotations.get("batch.kubernetes.io/job-completion-index")
        per_second, eta_seconds = parse_rate(annotations.get(PROGRESS_ANNOTATION))
        return cls(
            name=meta.get("name", ""),
            job_name=labels.get("job-name") or labels.get("batch.kubernetes.io/job-name", ""),
            owner_uid=labels.get(OWNER_UID_LABEL, ""),
            phase=status.get("phase", "Pending"),
            unschedulable_since=parse_time(scheduled.get("lastTransitionTime")) if unschedulable else None,
            unschedulable_message=scheduled.get("message", "") if unschedulable else "",
            exit_code=exit_code,
            termination_message=message,
            progress=parse_progress(annotations.get(PROGRESS_ANNOTATION)),
            completion_index=int(index) if index and index.isdigit() else None,
            per_second=per_second,
            eta_seconds=eta_seconds,
        )


def parse_progress(text: str | None) -> tuple[int, int] | None:
    """(done, total) from the pod's progress annotation; None when absent or garbled."""
    if not text:
        return None
    try:
        event = json.loads(text)
        return int(event["done"]), int(event["total"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_rate(text: str | None) -> tuple[float | None, float | None]:
    """(perSecond, etaSeconds) from the progress annotation, each None when absent or garbled."""
    if not text:
        return None, None
    try:
        event = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(event, dict):
        return None, None

    def number(key: str) -> float | None:
        value = event.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
            return None
        return float(value)

    return number("perSecond"), number("etaSeconds")


def parse_summary(message: str) -> dict[str, Any] | None:
    """The engine's summary JSON from a termination message; None if it is not JSON."""
    try:
        summary = json.loads(message)
    except ValueError:
        return None
    return summary if isinstance(summary, dict) else None

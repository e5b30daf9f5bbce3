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
    API_GROUP,
    CONTAINER_NAME,
    DEVICE_LABEL,
    PROGRESS_ANNOTATION,
)
from gpubatch_jobs.kinds import KINDS as KIND_PLUGINS

Key = tuple[str, str, str]  # (kind, namespace, name) of a gpubatch resource


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def controller(metadata: dict[str, Any], kinds: tuple[str, ...] | frozenset[str], group: str) -> tuple[str, str] | None:
    """(uid, name) of the object's controlling owner when it is one of `kinds` in API group `group`.

    Ownership rests on owner references, which only whoever may write the child can set
    (and the garbage collector honours only within the child's namespace), never on a
    label: a Job is ours when a gpubatch resource controls it, a pod when one of those
    Jobs does."""
    for ref in metadata.get("ownerReferences") or []:
        api_group = str(ref.get("apiVersion", "")).rpartition("/")[0]
        if ref.get("controller") and ref.get("kind") in kinds and api_group == group and ref.get("uid"):
            return str(ref["uid"]), str(ref.get("name", ""))
    return None


def our_kinds() -> frozenset[str]:
    """The kinds in the plug-in registry (gpubatch_jobs/kinds/)."""
    return frozenset(KIND_PLUGINS)


def owner_uid(metadata: dict[str, Any]) -> str | None:
    """The UID of the gpubatch resource controlling a Job (its owner reference), else None."""
    owner = controller(metadata, our_kinds(), API_GROUP)
    return owner[0] if owner else None


def job_owner(metadata: dict[str, Any]) -> tuple[str, str] | None:
    """(uid, name) of the batch/v1 Job controlling a pod, else None."""
    return controller(metadata, ("Job",), "batch")


@dataclass(frozen=True, slots=True)
class JobView:
    name: str
    uid: str  # also what Kueue files the Job's Workload under (label kueue.x-k8s.io/job-uid)
    namespace: str
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

    @classmethod
    def parse(cls, body: dict[str, Any]) -> JobView:
        meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failure = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        labels = meta.get("labels") or {}
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            namespace=meta.get("namespace", ""),
            owner_uid=owner_uid(meta) or "",
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
    namespace: str
    job_name: str  # the controlling Job's (owner reference)
    job_uid: str
    phase: str
    unschedulable_since: float | None
    unschedulable_message: str
    exit_code: int | None
    termination_message: str
    progress: tuple[int, int] | None
    completion_index: int | None
    finished_at: float | None = None  # when the main container terminated (its finishedAt)
    # From the progress annotation: the last checkpoint the pod wrote, and whether it was told
    # to stop (SIGTERM) and saved its work (gpubatch_jobs.preempt).
    checkpoint: dict[str, Any] | None = None
    preempted: bool = False
    # The engine's own measure of its current stage: items per second and seconds left.
    per_second: float | None = None
    eta_seconds: float | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> PodView:
        meta, status = body.get("metadata", {}), body.get("status") or {}
        annotations = meta.get("annotations") or {}
        scheduled: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
        unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        exit_code, message, finished_at = None, "", None
        for container in status.get("containerStatuses") or []:
            if container.get("name") != CONTAINER_NAME:
                continue
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                exit_code, message = terminated.get("exitCode"), terminated.get("message") or ""
                finished_at = parse_time(terminated.get("finishedAt"))
        index = annotations.get("batch.kubernetes.io/job-completion-index")
        job_uid, job_name = job_owner(meta) or ("", "")
        checkpoint, preempted = parse_checkpoint(annotations.get(PROGRESS_ANNOTATION))
        per_second, eta_seconds = parse_rate(annotations.get(PROGRESS_ANNOTATION))
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            job_name=job_name,
            job_uid=job_uid,
            phase=status.get("phase", "Pending"),
            unschedulable_since=parse_time(scheduled.get("lastTransitionTime")) if unschedulable else None,
            unschedulable_message=scheduled.get("message", "") if unschedulable else "",
            exit_code=exit_code,
            termination_message=message,
            progress=parse_progress(annotations.get(PROGRESS_ANNOTATION)),
            completion_index=int(index) if index and index.isdigit() else None,
            finished_at=finished_at,
            checkpoint=checkpoint,
            preempted=preempted,
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


_CHECKPOINT_INTS = ("epoch", "step", "done")
_CHECKPOINT_TEXTS = {"time": 40, "place": 1024}


def parse_checkpoint(text: str | None) -> tuple[dict[str, Any] | None, bool]:
    """(checkpoint, preempted) from the pod's progress annotation.

    The pod writes the annotation itself, so only the known keys are kept, as
    small ints and bounded strings: whatever else it holds never reaches status.
    """
    if not text:
        return None, False
    try:
        event = json.loads(text)
    except ValueError:
        return None, False
    if not isinstance(event, dict):
        return None, False
    preempted = event.get("preempted") is True
    raw = event.get("checkpoint")
    if not isinstance(raw, dict):
        return None, preempted
    checkpoint: dict[str, Any] = {}
    for key in _CHECKPOINT_INTS:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
            checkpoint[key] = value
    for key, limit in _CHECKPOINT_TEXTS.items():
        value = raw.get(key)
        if isinstance(value, str) and value:
            checkpoint[key] = value[:limit]
    return (checkpoint or None), preempted


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

"""The lifecycle of a gpubatch resource as an explicit state machine in `status`.

    (new) ──► Pending ──► Running ──► Succeeded
                 │  ▲         │
                 │  └─────────┤ (re-run on the CPU after a GPU fallback)
                 └────────────┴─────► Failed

Succeeded and Failed are final. A resource whose Job exists but whose status
was never written (the first write waits out a burst, or the operator was
killed first) is in Pending, whatever the status says: its first write may
land in Running or Succeeded at once. `advance()` takes the status as stored
and the outcome the reconciler observed, refuses moves the diagram does not
allow, keeps each condition's lastTransitionTime unless its status flips (the
Kubernetes convention), and returns the transitions so the caller can post one
Event per transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpubatch_jobs.contract import (
    COND_FAILED,
    COND_RUNNING,
    COND_SUCCEEDED,
    FAILED,
    FELL_BACK_TO_CPU,
    FINAL_PHASES,
    JOB_CREATED,
    PENDING,
    RUNNING,
    SUCCEEDED,
)

FINAL = FINAL_PHASES
PREEMPTED_PODS_KEPT = 64
ALLOWED: dict[str | None, frozenset[str]] = {
    None: frozenset({PENDING, FAILED}),
    PENDING: frozenset({PENDING, RUNNING, SUCCEEDED, FAILED}),
    RUNNING: frozenset({RUNNING, PENDING, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
}



@dataclass(frozen=True)
class Outcome:
    """What the reconciler saw: the phase the resource should be in, and why."""

    phase: str
    reason: str
    message: str
    device: str | None = None
    job_name: str | None = None
    attempts: int = 0
    progress: str | None = None
    result: dict[str, Any] | None = None
    start_time: str | None = None
    completion_time: str | None = None
    # (reason, message) once the resource was moved to the CPU.
    fallback: tuple[str, str] | None = None
    # TrainJob workers > 1: {"ready", "total", "perWorkerBatchSize", "groupRestarts"}.
    workers: dict[str, Any] | None = None
    # The last checkpoint a pod reported, and the pods stopped by SIGTERM after saving their work.
    checkpoint: dict[str, Any] | None = None
    preempted_pods: tuple[str, ...] = ()
    # Where the pods keep their logs (contract.log_folder of spec.output.path).
    log_ref: str | None = None
    # While running: the engine's items per second and the seconds it estimates are left.
    per_second: float | None = None
    eta_seconds: float | None = None


@dataclass(frozen=True)
class Transition:
    """One condition that became True: posted as an Event."""

    condition: str
    reason: str
    message: str
    warning: bool = False


@dataclass
class _Conditions:
    old: dict[str, dict[str, Any]]
    now: str
    changed: list[Transition] = field(default_factory=list)
    out: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, kind: str, true: bool, reason: str, message: str, *, warning: bool = False) -> None:
        status = "True" if true else "False"
        before = self.old.get(kind)
        flipped = before is None or before.get("status") != status
        self.out[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": self.now if before is None or flipped else before.get("lastTransitionTime", self.now),
        }
        if true and flipped:
            self.changed.append(Transition(kind, reason, message, warning))


def allowed(old: str | None, new: str) -> bool:
    return new in ALLOWED.get(old, frozenset())


def advance(status: dict[str, Any], outcome: Outcome, *, generation: int, now: str) -> tuple[dict[str, Any], list[Transition]]:
    """The next status and the transitions that lead there (none if the move is not allowed)."""
    old_phase = status.get("phase")
    if old_phase is None and outcome.job_name:
        old_phase = PENDING  # its Job exists: the first write may come after the Job moved on
    if not allowed(old_phase, outcome.phase):
        kept = dict(status)
        kept["observedGeneration"] = generation
        return kept, []
    conditions = _Conditions({c["type"]: c for c in status.get("conditions") or []}, now)
    for kept_type, kept_condition in conditions.old.items():
        conditions.out[kept_type] = kept_condition
    if outcome.job_name:
        conditions.set(JOB_CREATED, True, "Created", f"Job {outcome.job_name} on the {outcome.device} image")
    if outcome.fallback:
        conditions.set(FELL_BACK_TO_CPU, True, outcome.fallback[0], outcome.fallback[1], warning=True)
    if outcome.phase == RUNNING:
        conditions.set(COND_RUNNING, True, outcome.reason, outcome.message)
    elif COND_RUNNING in conditions.out:
        conditions.set(COND_RUNNING, False, outcome.reason, outcome.message)
    if outcome.phase == SUCCEEDED:
        conditions.set(COND_SUCCEEDED, True, outcome.reason, outcome.message)
    if outcome.phase == FAILED:
        conditions.set(COND_FAILED, True, outcome.reason, outcome.message, warning=True)
    new: dict[str, Any] = {
        "phase": outcome.phase,
        "conditions": list(conditions.out.values()),
        "observedGeneration": generation,
        "message": outcome.message,
    }
    optional = {
        "device": outcome.device,
        "jobName": outcome.job_name,
        "attempts": outcome.attempts or None,
        "result": outcome.result,
        "startTime": outcome.start_time or status.get("startTime"),
        "completionTime": outcome.completion_time,
        "workers": outcome.workers,
        # Kept across outcomes: a preempted pod is gone once the next one starts.
        "checkpoint": outcome.checkpoint or status.get("checkpoint"),
        # The progress of a pod that is gone (preempted, evicted) stays until the next pod reports
        # its own; a resumed pod starts from its checkpoint, so progress falls back by the step in
        # flight at most.
        "progress": outcome.progress if outcome.progress is not None else status.get("progress"),
        "logRef": outcome.log_ref,
        "throughputPerSecond": outcome.per_second,
        "estimatedRemainingSeconds": None if outcome.eta_seconds is None else int(round(outcome.eta_seconds)),
    }
    new.update({k: v for k, v in optional.items() if v is not None})
    counted = list(status.get("preemptedPods") or [])
    fresh = [pod for pod in outcome.preempted_pods if pod not in counted]
    if fresh or counted:
        new["preemptedPods"] = (counted + fresh)[-PREEMPTED_PODS_KEPT:]
        new["preemptions"] = int(status.get("preemptions") or 0) + len(fresh)
    return new, conditions.changed


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level (removed keys -> null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


PROGRESS_KEYS = frozenset({"progress", "throughputPerSecond", "estimatedRemainingSeconds"})


def only_progress_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Only the progress moved (its rate and ETA included): such writes are paced."""
    patch = merge_patch(old, new)
    return bool(patch) and set(patch) <= PROGRESS_KEYS

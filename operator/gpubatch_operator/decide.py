"""What to do about one resource, decided from what is observed: pure and level-based.

The reconciler hands `decide()` a `World` (the resource, its Jobs and Pods as
cached from the watches, whether any node offers a GPU, the time) and gets a
`Plan`: Jobs to create or delete, the `Outcome` for the state machine, and
when to look again. Because the answer depends only on the world and not on
which event arrived, an operator killed at any point decides the same thing
after a restart, and the deterministic Job names make repeating an action
harmless.

Device choice (policy `auto`): no node with allocatable GPUs -> CPU Job at
once; else a GPU Job, replaced by the CPU Job when one of its pods stays
unschedulable longer than gpuPendingTimeout (GpuUnschedulable). Any GPU Job
whose pod exits 75 is re-run on the CPU when fallbackOnGpuFailure allows
(GpuUnusable). A GPU Job that Kueue keeps suspended (its queue's GPU quota
is used up) longer than gpuPendingTimeout is replaced the same way
(GpuQuotaExhausted): the CPU Job goes to the same LocalQueue, where it asks
for no GPU and so fits a CPU flavour. Exit 1 fails the resource at once with the engine's message.
Exit codes, reasons and phases are the contract's (gpubatch_jobs/contract.py);
an exit code is read from the pod's container status only, never from the
Job controller's message, which is kept for people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from gpubatch_jobs.contract import (
    COMPLETED,
    EXIT_GPU_UNUSABLE,
    FAIL_AT_ONCE,
    FELL_BACK_TO_CPU,
    GPU_QUOTA_EXHAUSTED,
    GPU_UNSCHEDULABLE,
    GPU_UNUSABLE,
    GROUP_RESTARTING,
    INVALID_SPEC,
    JOB_CREATED,
    JOB_FAILED,
    NO_GPU_NODES,
    QUEUED,
    STARTED,
    UNSCHEDULABLE,
    log_folder,
)
from gpubatch_jobs.kinds import KindPlugin
from gpubatch_jobs.runtime import format_progress
from gpubatch_jobs.spec import parse_duration
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_operator.naming import job_name
from gpubatch_operator.observe import JobView, PodView, parse_summary
from gpubatch_operator.state import FAILED, FINAL, PENDING, RUNNING, SUCCEEDED, Outcome

# A failed Job's pod may reach the operator after the Job (two watches): wait this long
# for its exit code before calling the failure by the Job controller's reason.
POD_STATUS_GRACE_S = 10.0
# A Job Kueue holds is looked at again this often, so status.message follows its Workload's reason.
QUEUE_LOOK_S = 15.0


@dataclass(frozen=True)
class World:
    plugin: KindPlugin  # the kind's plug-in (gpubatch_jobs/kinds/); `kind` elsewhere is its name
    name: str
    namespace: str
    uid: str
    generation: int
    spec: CommonSpec | None
    spec_error: str | None
    status: dict[str, Any]
    jobs: list[JobView]
    pods: list[PodView]
    gpu_nodes: int | None  # None: the node list is not known yet
    now: float
    default_policy: str = "auto"
    default_pending_timeout: str = "5m"
    gpu_resource: str = "nvidia.com/gpu"
    # (reason, message): fail at once, make nothing (policy.refusal, or a permanent API error).
    refusal: tuple[str, str] | None = None
    # Deleted pods that had reported a checkpoint or a preemption (store.Store.departed): read for
    # status.checkpoint and status.preemptions only, never for the phase.
    departed: list[PodView] = field(default_factory=list)
    # Why Kueue has not admitted the suspended Job: its Workload's condition message (None: unknown).
    queue_message: str | None = None


@dataclass(frozen=True)
class CreateJob:
    job_name: str
    device: str
    attempt: int
    fallback_reason: str | None = None


@dataclass(frozen=True)
class DeleteJob:
    job_name: str
    # Foreground: the Job goes only once its pods are gone (a worker group's restart
    # must not meet the old group's pods, which share the new pods' names).
    propagation: str = "Background"


@dataclass
class Plan:
    outcome: Outcome | None
    actions: list[CreateJob | DeleteJob] = field(default_factory=list)
    requeue_after: float | None = None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def effective_policy(spec: CommonSpec, default: str) -> str:
    return str(spec.device.policy) if "policy" in spec.device.model_fields_set else default


def pending_timeout_s(spec: CommonSpec, default: str) -> float:
    given = "gpu_pending_timeout" in spec.device.model_fields_set
    return parse_duration(spec.device.gpu_pending_timeout if given else default)


def decide(world: World) -> Plan:
    plan = _decide(world)
    if plan.outcome is not None and plan.outcome.job_name and world.spec is not None:
        # Every attempt's pods keep their logs in one folder beside the output (gpubatch_jobs.podlog).
        plan.outcome = replace(plan.outcome, log_ref=log_folder(str(world.spec.output.path)))
    return plan


def _decide(world: World) -> Plan:
    status = world.status
    if status.get("phase") in FINAL:
        return Plan(outcome=None)
    if world.spec is None:
        return Plan(Outcome(FAILED, INVALID_SPEC, world.spec_error or "the spec does not validate"))
    if world.refusal is not None:
        return Plan(Outcome(FAILED, *world.refusal))
    spec = world.spec
    first = job_name(world.name, world.plugin.command)
    rerun = job_name(world.name, world.plugin.command, cpu_rerun=True)
    mine = {j.name: j for j in world.jobs if j.owner_uid == world.uid}
    fallback = _stored_fallback(status)

    if rerun in mine or status.get("jobName") == rerun:
        plan = _follow(world, spec, mine.get(rerun), rerun, "cpu", 2, fallback)
        if first in mine and not mine[first].deleting:
            plan.actions.append(DeleteJob(first))
        return plan
    if first in mine or status.get("jobName") == first:
        device = mine[first].device if first in mine else status.get("device", "cpu")
        return _follow(world, spec, mine.get(first), first, device, 1, fallback)
    return _start(world, spec, first)


def _stored_fallback(status: dict[str, Any]) -> tuple[str, str] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == FELL_BACK_TO_CPU and condition.get("status") == "True":
            return condition.get("reason", ""), condition.get("message", "")
    return None


def _start(world: World, spec: CommonSpec, first: str) -> Plan:
    policy = effective_policy(spec, world.default_policy)
    fallback = None
    if policy == "auto":
        if world.gpu_nodes is None:
            return Plan(outcome=None, requeue_after=1.0)
        if world.gpu_nodes == 0:
            fallback = (NO_GPU_NODES, f"no node offers allocatable {world.gpu_resource}; running on the CPU image")
    device = "gpu" if policy == "gpu" or (policy == "auto" and fallback is None) else "cpu"
    outcome = Outcome(
        PENDING, JOB_CREATED, f"Job {first} created on the {device} image",
        device=device, job_name=first, attempts=1, fallback=fallback,
    )
    return Plan(outcome, [CreateJob(first, device, 1, fallback[0] if fallback else None)])


def _fall_back(world: World, current: str, reason: str, message: str) -> Plan:
    rerun = job_name(world.name, world.plugin.command, cpu_rerun=True)
    outcome = Outcome(
        PENDING, FELL_BACK_TO_CPU, f"{message}; re-running as Job {rerun} on the CPU image",
        device="cpu", job_name=rerun, attempts=2, fallback=(reason, message),
    )
    # Create before delete: a crash in between leaves both Jobs, and the next
    # reconcile (which sees the re-run) deletes the GPU one.
    return Plan(outcome, [CreateJob(rerun, "cpu", 2, reason), DeleteJob(current)])


def _follow(
    world: World, spec: CommonSpec, job: JobView | None, name: str, device: str, attempt: int,
    fallback: tuple[str, str] | None,
) -> Plan:
    group = world.plugin.group_size(spec)
    restarts = group_restarts(world.status) if group > 1 else 0
    pods = [p for p in world.pods if p.job_name == name and (job is None or p.job_uid == job.uid)]

    def outcome(phase: str, reason: str, message: str, **extra: Any) -> Outcome:
        extra.setdefault("workers", _workers_status(world.plugin, spec, pods, restarts))
        reporters = [*world.departed, *pods]
        extra.setdefault("checkpoint", _checkpoint(reporters, world.status))
        extra.setdefault("preempted_pods", tuple(dict.fromkeys(p.name for p in reporters if p.preempted)))
        return Outcome(phase, reason, message, device=device, job_name=name, attempts=attempt + restarts,
                       fallback=fallback, **extra)

    if job is None:
        # Recorded in status but not seen: not in the cache yet, or deleted by
        # someone (or by a worker group's restart). Creating it again under the same
        # name is harmless either way.
        created = outcome(PENDING, JOB_CREATED, f"Job {name} created on the {device} image")
        return Plan(created, [CreateJob(name, device, attempt + restarts)], requeue_after=5.0)
    if job.deleting:
        return Plan(outcome=None, requeue_after=2.0)
    # A worker group's progress and result are worker 0's (it trains the same steps and publishes).
    progress = _progress([p for p in pods if p.completion_index == 0] if group > 1 else pods)
    if job.complete:
        return Plan(outcome(
            SUCCEEDED, COMPLETED, f"Job {name} completed on the {device} image",
            progress="100%", result=_group_result(pods) if group > 1 else _result(pods),
            start_time=job.start_time, completion_time=job.completion_time or iso(world.now),
        ))
    if job.failed:
        if group > 1:
            restart = _restart_group(world, spec, job, pods, device, attempt, restarts, outcome)
            if restart is not None:
                return restart
        return _failed(world, spec, job, pods, device, attempt, outcome)
    policy = effective_policy(spec, world.default_policy)
    if job.suspended:
        queue = spec.queue_name or "its queue"
        why = f": {world.queue_message}" if world.queue_message else ""
        text = f"not admitted by Kueue from {queue}{why}"
        auto_gpu = device == "gpu" and attempt == 1 and policy == "auto" and job.suspended_since is not None
        if auto_gpu:
            deadline = job.suspended_since + pending_timeout_s(spec, world.default_pending_timeout)  # type: ignore[operator]
            text += f"; moves to the CPU image at {iso(deadline)} if still waiting"
        queued = outcome(PENDING, QUEUED, f"Job {name} {text}")
        if auto_gpu and job.suspended_since is not None:
            # Kueue never changes a Job's image or requests: only the operator can offer the CPU instead.
            timeout = pending_timeout_s(spec, world.default_pending_timeout)
            waited = world.now - job.suspended_since
            if waited >= timeout:
                return _fall_back(world, name, GPU_QUOTA_EXHAUSTED,
                                  f"Kueue did not admit the GPU Job from {queue} within {waited:.0f}s "
                                  f"(gpuPendingTimeout {timeout:g}s): its GPU quota is used up")
            return Plan(queued, requeue_after=min(QUEUE_LOOK_S, timeout - waited + 0.05))
        return Plan(queued, requeue_after=QUEUE_LOOK_S)  # the Workload's reason may change
    if device == "gpu" and attempt == 1 and policy == "auto":
        # Only a shortage of GPUs is cured by the CPU image; a missing claim is not.
        stuck = [p for p in pods if p.unschedulable_since is not None
                 and (world.gpu_resource in p.unschedulable_message or not p.unschedulable_message)]
        since = [p.unschedulable_since for p in stuck if p.unschedulable_since is not None]
        if since:
            timeout = pending_timeout_s(spec, world.default_pending_timeout)
            waited = world.now - min(since)
            if waited >= timeout:
                why = stuck[0].unschedulable_message
                message = f"the GPU pod stayed unschedulable for {waited:.0f}s (gpuPendingTimeout {timeout:g}s)"
                return _fall_back(world, name, GPU_UNSCHEDULABLE, f"{message}: {why}" if why else message)
            why = stuck[0].unschedulable_message or "unschedulable"
            pending = outcome(PENDING, UNSCHEDULABLE,
                              f"Job {name} waits for a GPU node ({why}); moves to the CPU image at "
                              f"{iso(min(since) + timeout)} if still waiting (gpuPendingTimeout {timeout:g}s)")
            return Plan(pending, requeue_after=timeout - waited + 0.05)
    blocked = next((p for p in pods if p.unschedulable_since is not None), None)
    if blocked is not None:
        return Plan(outcome(PENDING, UNSCHEDULABLE,
                            f"Job {name} is unschedulable: {blocked.unschedulable_message or 'no node fits its pod'}"))
    if any(p.phase == "Running" for p in pods):
        per_second, eta = _rate([p for p in pods if p.completion_index == 0] if group > 1 else pods)
        return Plan(outcome(
            RUNNING, STARTED, f"Job {name} is running on the {device} image",
            progress=progress, start_time=job.start_time, per_second=per_second, eta_seconds=eta,
        ))
    return Plan(outcome(PENDING, JOB_CREATED, f"Job {name} created on the {device} image", progress=progress))


def _failed(world: World, spec: CommonSpec, job: JobView, pods: list[PodView], device: str,
            attempt: int, outcome: Any) -> Plan:
    failed_pods = [p for p in pods if p.exit_code not in (None, 0)]
    if not failed_pods:
        waited = world.now - job.failed_since if job.failed_since is not None else POD_STATUS_GRACE_S
        if waited < POD_STATUS_GRACE_S:
            return Plan(outcome=None, requeue_after=min(1.0, POD_STATUS_GRACE_S - waited))
    code = failed_pods[-1].exit_code if failed_pods else None
    summary = next((s for p in failed_pods if (s := parse_summary(p.termination_message))), None)
    detail = (summary or {}).get("message") or (failed_pods[-1].termination_message.strip() if failed_pods else "")
    if code == EXIT_GPU_UNUSABLE and device == "gpu" and attempt == 1 and spec.device.fallback_on_gpu_failure:
        message = "the GPU pod exited 75 (GPU requested but unusable)" + (f": {detail}" if detail else "")
        return _fall_back(world, job.name, GPU_UNUSABLE, message)
    reason = FAIL_AT_ONCE.get(code or -1, job.failed_reason or JOB_FAILED)
    message = detail or job.failed_message or f"Job {job.name} failed"
    if code is not None and not detail and f"exit code {code}" not in message:
        message = f"{message} (exit code {code})"
    return Plan(outcome(
        FAILED, reason, message, result=summary, start_time=job.start_time, completion_time=iso(world.now),
    ))


def group_restarts(status: dict[str, Any]) -> int:
    try:
        return int((status.get("workers") or {}).get("groupRestarts") or 0)
    except (TypeError, ValueError):
        return 0


def _workers_status(plugin: KindPlugin, spec: CommonSpec, pods: list[PodView], restarts: int
                    ) -> dict[str, Any] | None:
    """status.workers of a worker group (the kind's WorkerGroup hook gives its size and batch)."""
    group = plugin.worker_group
    if group is None or group.size(spec) <= 1:
        return None
    ready = sum(1 for p in pods if p.phase == "Running")
    status = {"ready": ready, "total": group.size(spec), "groupRestarts": restarts}
    per_worker = group.batch_per_worker(spec)
    return status if per_worker is None else {**status, "perWorkerBatchSize": per_worker}


def _restart_group(world: World, spec: CommonSpec, job: JobView, pods: list[PodView], device: str,
                   attempt: int, restarts: int, outcome: Any) -> Plan | None:
    """Gang semantics: a worker failed (not bad input, not an unusable GPU), so the whole
    group starts again as a new attempt, resuming from worker 0's last checkpoint; None
    when the failure is final or the restarts (spec.backoffLimit) are used up."""
    codes = [p.exit_code for p in pods if p.exit_code not in (None, 0)]
    if not codes:
        waited = world.now - job.failed_since if job.failed_since is not None else POD_STATUS_GRACE_S
        if waited < POD_STATUS_GRACE_S:
            return Plan(outcome=None, requeue_after=min(1.0, POD_STATUS_GRACE_S - waited))
    if any(c in FAIL_AT_ONCE for c in codes) or restarts >= spec.backoff_limit:
        return None
    # The worker that failed first (its container's finishedAt, to the second), not a peer the Job
    # controller then stopped (143, SIGTERM) nor one whose collective call then failed because the
    # first was gone; within the same second, one killed by a signal (128 + n) before one that erred.
    failed = min((p for p in pods if p.exit_code not in (None, 0)), default=None,
                 key=lambda p: (p.exit_code == 143, p.finished_at if p.finished_at is not None else math.inf,
                                (p.exit_code or 0) <= 128, p.completion_index or 0))
    who = f"worker {failed.completion_index} (pod {failed.name}) exited {failed.exit_code}" if failed \
        else f"Job {job.name} failed ({job.failed_reason or 'no exit code seen'})"
    message = (f"{who}; restarting the whole group of {world.plugin.group_size(spec)} as attempt "
               f"{attempt + restarts + 1} (restart {restarts + 1} of at most {spec.backoff_limit}), "
               "resuming from the last checkpoint")
    restarting = replace(
        outcome(PENDING, GROUP_RESTARTING, message,
                workers=_workers_status(world.plugin, spec, [], restarts + 1)),
        attempts=attempt + restarts + 1,
    )
    return Plan(restarting, [DeleteJob(job.name, propagation="Foreground")], requeue_after=2.0)


def _group_result(pods: list[PodView]) -> dict[str, Any] | None:
    """Worker 0's summary: the group's result (the others report the same run, unpublished)."""
    chief = next((p for p in pods if p.completion_index == 0 and p.phase == "Succeeded"), None)
    return parse_summary(chief.termination_message) if chief is not None else None


def _checkpoint(pods: list[PodView], status: dict[str, Any]) -> dict[str, Any] | None:
    """The newest checkpoint a pod reported (pods come and go: the stored one otherwise)."""
    stored = status.get("checkpoint") if isinstance(status.get("checkpoint"), dict) else None
    reported = [p.checkpoint for p in pods if p.checkpoint is not None]
    candidates = [c for c in [stored, *reported] if c is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda c: str(c.get("time") or ""))


def _progress(pods: list[PodView]) -> str | None:
    reports = [p.progress for p in pods if p.progress is not None]
    if not reports:
        return None
    return format_progress(sum(d for d, _ in reports), sum(t for _, t in reports))


def _rate(pods: list[PodView]) -> tuple[float | None, float | None]:
    """The running pods' items per second (summed over shards) and the longest time left."""
    running = [p for p in pods if p.phase == "Running" and p.per_second is not None]
    if not running:
        return None, None
    per_second = round(sum(p.per_second or 0.0 for p in running), 3)
    etas = [p.eta_seconds for p in running if p.eta_seconds is not None]
    return per_second, max(etas) if etas else None


def _result(pods: list[PodView]) -> dict[str, Any] | None:
    summaries = [(p.completion_index, s) for p in pods if p.phase == "Succeeded"
                 if (s := parse_summary(p.termination_message)) is not None]
    if not summaries:
        return None
    if len(summaries) == 1 and summaries[0][0] is None:
        return summaries[0][1]
    ordered = sorted(summaries, key=lambda item: item[0] or 0)
    return {"shards": [s for _, s in ordered]}

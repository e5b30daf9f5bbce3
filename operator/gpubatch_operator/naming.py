"""Deterministic names and labels of everything the operator creates.

A restarted operator must find, not duplicate, the Job it made before it was
killed, so names are a function of the resource alone: the first Job of
RenderJob `x` is `x-render`, its CPU re-run after a GPU fallback is
`x-render-cpu`. Creating under a fixed name makes the API server the judge:
a 409 means "it exists already". Labels tie Jobs and pods back to their
resource for the label-filtered watches: children are filed under the
resource's UID (`gpubatch.dev/owner-uid`, always a valid label value); the
name label is shortened past 63 characters and is there for people only.
"""

from __future__ import annotations

import hashlib

from gpubatch_jobs.contract import (  # noqa: F401 - the labels are the contract's; re-exported for the operator
    ATTEMPT_LABEL,
    DEVICE_LABEL,
    KIND_LABEL,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    NAME_LABEL,
    OWNER_NAME_LABEL,
    OWNER_UID_LABEL,
    TEST_ANNOTATION_PREFIX,
)

# Job names stay short enough for the pod names and `job-name` labels derived
# from them (Indexed pods add "-<index>-<random>").
MAX_JOB_NAME = 52


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-')}-{digest}"


def job_name(resource_name: str, command: str, *, cpu_rerun: bool = False) -> str:
    """`x-render` for the first Job, `x-render-cpu` for the CPU re-run."""
    suffix = f"-{command}" + ("-cpu" if cpu_rerun else "")
    return _shorten(resource_name, MAX_JOB_NAME - len(suffix)) + suffix


def workers_service_name(resource_name: str) -> str:
    """The headless Service of a TrainJob's worker group: `x-workers` (a DNS-1035 label)."""
    return _shorten(resource_name, 63 - len("-workers")) + "-workers"


def worker_hosts(job: str, service: str, count: int, port: int) -> str:
    """Every worker's stable address: the Indexed Job's pod hostnames `JOB-i` under the
    Service's subdomain, resolved through the pod's DNS search path (NAMESPACE.svc...)."""
    return ",".join(f"{job}-{index}.{service}:{port}" for index in range(count))


def volume_name(claim: str) -> str:
    """A volume name (a DNS label) for a claim."""
    return _shorten(f"pvc-{claim}", 63)


def owner_labels(kind: str, name: str, uid: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        NAME_LABEL: "gpubatch",
        KIND_LABEL: kind.lower(),
        OWNER_NAME_LABEL: _shorten(name, 63),
        OWNER_UID_LABEL: uid,
    }

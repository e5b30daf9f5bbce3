"""Why Kueue has not admitted a suspended Job: its Workload's own words, for status.message.

Kueue files a Job's Workload under the label `kueue.x-k8s.io/job-uid`; while
it waits, the Workload's `QuotaReserved` (or `Admitted`) condition is False
with a message such as "couldn't assign flavors to pod set main: insufficient
unused quota for nvidia.com/gpu in flavor gpu, 1 more needed". The operator
reads it (get/list on workloads, nothing else) when a Job of ours is
suspended, at most every `CACHE_S` per Job; without Kueue (no such API) or
without the right, the message is simply not known.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gpubatch_operator.client import ApiError, KubeClient

log = logging.getLogger("gpubatch.operator")

KUEUE_GROUP = "kueue.x-k8s.io"
VERSIONS = ("v1beta2", "v1beta1")  # the first the API server serves is used
JOB_UID_LABEL = f"{KUEUE_GROUP}/job-uid"
CACHE_S = 10.0


def waiting_reason(workload: dict[str, Any]) -> str | None:
    """One line from a Workload's conditions: why it is not admitted (None: nothing said)."""
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    for kind in ("QuotaReserved", "Admitted", "Evicted"):
        condition = conditions.get(kind)
        if condition is None:
            continue
        waiting = condition.get("status") == "False" or (kind == "Evicted" and condition.get("status") == "True")
        if waiting and condition.get("message"):
            return " ".join(str(condition["message"]).split())
    return None


class QueueReasons:
    """Cached look-ups of the Workload message of suspended Jobs."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.cache: dict[str, tuple[float, str | None]] = {}
        self.version: str | None = None
        self.unavailable_until = 0.0

    async def reason(self, namespace: str, job_uid: str) -> str | None:
        now = time.monotonic()
        cached = self.cache.get(job_uid)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        if not job_uid or now < self.unavailable_until:
            return cached[1] if cached else None
        message = None
        for version in ([self.version] if self.version else list(VERSIONS)):
            path = f"/apis/{KUEUE_GROUP}/{version}/namespaces/{namespace}/workloads"
            try:
                listing = await self.client.get(path, {"labelSelector": f"{JOB_UID_LABEL}={job_uid}"})
            except ApiError as err:
                if err.not_found and self.version is None:
                    continue
                log.debug("cannot read Kueue Workloads in %s: %s", namespace, err)
                self.unavailable_until = now + 60.0  # no Kueue, or no right: ask again in a minute
                break
            self.version = version
            message = next((m for item in listing.get("items") or [] if (m := waiting_reason(item))), None)
            break
        else:
            self.unavailable_until = now + 60.0
        self.cache[job_uid] = (now, message)
        return message

    def forget(self, job_uid: str) -> None:
        self.cache.pop(job_uid, None)

"""One active operator among replicas: leader election on a coordination.k8s.io Lease.

Every replica runs kopf's watches and keeps its store warm; only the holder
of the Lease runs reconcile workers, so only it creates Jobs and writes
status. The algorithm is client-go's (leaderelection): the holder renews
`spec.renewTime` every RENEW_S; another replica takes the Lease over when it
has seen no change to it for LEASE_S (measured on its own clock, so clock
skew between nodes does not matter); every write is an update against the
resourceVersion it read, so two replicas can never both win. A holder that
cannot renew within LEASE_S stops its workers at once (before anyone may take
over), and a replica that stops on SIGTERM lets go of the Lease, so a rolling
update hands over without waiting.

Why no duplicate Job and no lost status on a handover: Job names are
deterministic (a 409 means "exists already"), and the status is rebuilt from
what is observed (decide.py is level-based), so the new leader simply
reconciles every resource it knows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gpubatch_operator.client import ApiError, KubeClient, namespaced

log = logging.getLogger("gpubatch.operator")

LEASE_API = "coordination.k8s.io/v1"
LEASE_S = 15.0
RENEW_S = 5.0
RETRY_S = 2.0


def _micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaderElection:
    client: KubeClient
    namespace: str
    name: str
    identity: str
    on_started: Callable[[], None]
    on_stopped: Callable[[], None]
    lease_s: float = LEASE_S
    renew_s: float = RENEW_S
    retry_s: float = RETRY_S
    leading: bool = False
    # What this replica last saw of another holder's Lease, and when (monotonic).
    _observed: tuple[str, float] = ("", 0.0)
    _last_renew: float = 0.0
    transitions: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return namespaced(LEASE_API, "leases", self.namespace, self.name)

    async def run(self) -> None:
        """Try to lead, lead, and keep leading until cancelled."""
        try:
            while True:
                won: bool | None
                try:
                    won = await self.try_acquire_or_renew()
                except ApiError as err:  # unknown: keep leading until the Lease could have expired
                    log.warning("leader election: %s", err)
                    won = None
                except Exception as err:  # noqa: BLE001 - the loop must survive anything (a dropped
                    # connection, a timeout, a garbled answer): the same as an unknown answer.
                    log.warning("leader election: %s: %s", type(err).__name__, err)
                    won = None
                now = time.monotonic()
                if won:
                    self._last_renew = now
                    if not self.leading:
                        self.leading = True
                        self.transitions.append("started")
                        log.info("leader election: %s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
                        self.on_started()
                elif self.leading and (now - self._last_renew >= self.lease_s - self.retry_s or won is False):
                    self._stop("lost the Lease")
                await asyncio.sleep(self.renew_s if self.leading else self.retry_s)
        finally:
            if self.leading:
                self._stop("stopping")
                await self.release()

    def _stop(self, why: str) -> None:
        self.leading = False
        self.transitions.append("stopped")
        log.warning("leader election: %s no longer leads (%s)", self.identity, why)
        self.on_stopped()

    def _lease(self, holder: str, now: float, transitions: int, acquired: float | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(self.lease_s),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }
        if acquired is not None:
            spec["acquireTime"] = _micro_time(acquired)
        return spec

    async def try_acquire_or_renew(self) -> bool:
        now = time.time()
        try:
            lease = await self.client.get(self.path)
        except ApiError as err:
            if not err.not_found:
                raise
            body = {"apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._lease(self.identity, now, 0, acquired=now)}
            try:
                await self.client.create(namespaced(LEASE_API, "leases", self.namespace), body)
            except ApiError as create_err:
                if create_err.already_exists:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = (lease.get("metadata") or {}).get("resourceVersion", "")
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder and holder != self.identity:
            seen_version, seen_at = self._observed
            if seen_version != version:
                self._observed = (version, time.monotonic())
                return False
            duration = float(spec.get("leaseDurationSeconds") or self.lease_s)
            if time.monotonic() - seen_at < duration:
                return False
            log.info("leader election: the Lease of %s expired; taking over", holder)
        if holder == self.identity:
            new_spec = {**spec, **self._lease(self.identity, now, transitions)}
        else:
            new_spec = self._lease(self.identity, now, transitions + 1, acquired=now)
        body = {**lease, "spec": new_spec}
        try:
            await self.client.request("PUT", self.path, body=body)
        except ApiError as err:
            if err.status == 409:  # someone else wrote it first
                return False
            raise
        return True

    async def release(self) -> None:
        """Let go of the Lease (on shutdown), so another replica takes over at once."""
        try:
            lease = await self.client.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
            await self.client.request("PUT", self.path, body=lease)
        except (ApiError, asyncio.CancelledError) as err:
            log.info("leader election: could not release the Lease: %s", err)

"""Burst pacing of status writes: Jobs first, then one status write per resource.

While resources still wait for their first Job, or while new ones keep
arriving (kubectl apply and GitOps tools send one create after another),
status writes and Events wait, at most MAX_STATUS_DELAY_S: in a burst the
API server's write capacity goes to creating Jobs first, and each resource
gets one status write instead of one per transition. The waiting keys are
parked, not polled, and all enqueued again once the burst is over. A lone
resource never waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from gpubatch_operator.observe import Key
from gpubatch_operator.workqueue import WorkQueue

MAX_STATUS_DELAY_S = 10.0
# A new resource that arrived less than this before counts as a burst still arriving.
BURST_QUIET_S = 0.5


@dataclass
class StatusPacer:
    queue: WorkQueue[Key]
    # Resources still waiting for their first Job.
    starting: set[Key] = field(default_factory=set)
    deferred_since: dict[Key, float] = field(default_factory=dict)
    # The last two new resources (arrival time, key): a lone resource never waits.
    _arrivals: deque[tuple[float, Key]] = field(default_factory=lambda: deque(maxlen=2))
    _release_timer: asyncio.TimerHandle | None = None

    def arrived(self, key: Key, now: float | None = None) -> None:
        """A resource with no Job yet was seen for the first time."""
        if key not in self.starting:
            self.starting.add(key)
            self._arrivals.append((time.time() if now is None else now, key))

    def forget(self, key: Key) -> None:
        self.deferred_since.pop(key, None)
        self.started(key)

    def started(self, key: Key) -> None:
        """`key` no longer waits for its first Job; the last one out releases the parked status writes."""
        if key not in self.starting:
            return
        self.starting.discard(key)
        if not self.starting:
            self.release()

    def release(self, now: float | None = None) -> None:
        """Enqueue every parked key once the burst is over; else look again when it may be."""
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        if not self.deferred_since or self.starting:
            return  # nothing parked, or `started` calls again when `starting` drains
        left = self.burst_left(None, time.time() if now is None else now)
        if left > 0:
            self._release_timer = asyncio.get_running_loop().call_later(left, self.release)
            return
        for parked in list(self.deferred_since):
            self.queue.add(parked)

    def burst_left(self, key: Key | None, now: float) -> float:
        """Seconds until a burst is over: another resource waits for its first Job, or arrived lately."""
        if self.starting - {key}:
            return BURST_QUIET_S  # `started` releases the parked keys when they are done
        recent = [at for at, other in self._arrivals if other != key]
        return max(recent) + BURST_QUIET_S - now if recent else 0.0

    def defer(self, key: Key, now: float) -> bool:
        """True (and parked) while a burst is under way (`burst_left`).

        A parked key comes back when the burst is over (`release`: the last
        first Job exists and no new resource came for BURST_QUIET_S) or after
        MAX_STATUS_DELAY_S, whichever is first.
        """
        burst = self.burst_left(key, now)
        if burst <= 0:
            self.deferred_since.pop(key, None)
            return False
        left = self.deferred_since.setdefault(key, now) + MAX_STATUS_DELAY_S - now
        if left <= 0:
            self.deferred_since.pop(key, None)
            return False
        self.queue.add_after(key, left)  # a no-op while the timer set at parking time is pending
        if self._release_timer is None and not self.starting:
            self._release_timer = asyncio.get_running_loop().call_later(burst, self.release)
        return True

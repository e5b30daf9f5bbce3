"""SIGTERM: stop at the next safe point, keep the work, exit 143.

A pod is deleted, evicted, drained or preempted (Kueue) with a SIGTERM, then
SIGKILLed when its grace period (`terminationGracePeriodSeconds`) ends. What
happens in between depends on where the engine is:

- Inside `graceful()` (a TrainJob's training loop, a PredictJob's chunk loop,
  a RenderJob's image loop) the handler only records the request. The engine
  asks `requested()` at its safe points (after a training step, a chunk, an
  image), saves what it has (a step-level checkpoint, the finished chunks or
  images) and raises `Terminated` with where it stopped.
- Anywhere else (reading input, loading a framework, publishing) the handler
  raises `Terminated` at once, as before: nothing there is worth a wait, and
  every write is atomic.

`Terminated` is a BaseException, so no `except Exception` in an engine
swallows it; the caller (`gpubatch-job` in a pod, `gpubatch run` locally)
turns it into exit 143 and a summary with `reason: Terminated` and the
checkpoint it left.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "graceful", "install", "requested", "stop"]


class Terminated(BaseException):  # noqa: N818 - the name says what happened to the process
    """SIGTERM arrived. `checkpoint` says what was saved before stopping (None: nothing new)."""

    def __init__(self, *args: Any, checkpoint: dict[str, Any] | None = None) -> None:
        super().__init__(*args)
        self.checkpoint = checkpoint


_lock = threading.Lock()
_installed = False
_depth = 0  # nesting of graceful() sections
_requested_at: float | None = None  # time.monotonic() of the first SIGTERM


def _on_sigterm(signum: int, frame: object) -> None:
    global _requested_at
    if _requested_at is None:
        _requested_at = time.monotonic()
    if _depth == 0:
        raise Terminated(signum)


def install() -> None:
    """Handle SIGTERM in this process (main thread only, as Python requires)."""
    global _requested_at, _installed
    _requested_at = None
    _installed = True
    signal.signal(signal.SIGTERM, _on_sigterm)


def reclaim() -> None:
    """Take SIGTERM back after a framework set its own C-level handler.

    TensorFlow's MultiWorkerMirroredStrategy starts a coordination service whose
    preemption notifier installs a SIGTERM handler of its own, which would leave
    ours (and so the step checkpoint) unseen. A no-op unless install() ran.
    """
    if _installed:
        signal.signal(signal.SIGTERM, _on_sigterm)


def requested() -> bool:
    """Whether a SIGTERM has arrived (the engine should stop at its next safe point)."""
    return _requested_at is not None


def active() -> bool:
    """Whether a graceful() section is open (the engine stops itself at its safe points)."""
    return _depth > 0


def seconds_since_request() -> float | None:
    return None if _requested_at is None else time.monotonic() - _requested_at


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """A section whose engine stops itself at a safe point on SIGTERM.

    On leaving it with a SIGTERM pending (the work ended before a safe point
    asked), `Terminated` is raised then, unless an exception is already on
    its way out.
    """
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
    if _depth == 0 and requested():
        raise Terminated(signal.SIGTERM)


def stop(checkpoint: dict[str, Any] | None = None) -> Terminated:
    """The exception an engine raises at its safe point, carrying what it saved."""
    return Terminated(signal.SIGTERM, checkpoint=checkpoint)


def reset() -> None:
    """Forget a recorded SIGTERM (tests that run engines in-process)."""
    global _requested_at
    _requested_at = None

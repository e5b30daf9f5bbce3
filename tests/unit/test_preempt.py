"""gpubatch_jobs.preempt: SIGTERM raises at once outside an engine's work loop, and only asks inside it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from gpubatch_jobs import preempt


@pytest.fixture(autouse=True)
def _handler() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    preempt.install()
    yield
    preempt.reset()
    signal.signal(signal.SIGTERM, before)


def test_outside_a_graceful_section_sigterm_raises_at_once() -> None:
    with pytest.raises(preempt.Terminated) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert caught.value.checkpoint is None


def test_inside_a_graceful_section_sigterm_only_asks_and_the_section_end_raises() -> None:
    reached = []
    with pytest.raises(preempt.Terminated):
        with preempt.graceful():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            assert preempt.requested()
            reached.append("after the signal")
    assert reached == ["after the signal"]


def test_the_engines_stop_carries_its_checkpoint_and_is_not_an_exception() -> None:
    err = preempt.stop({"epoch": 1, "step": 5})
    assert err.checkpoint == {"epoch": 1, "step": 5}
    assert not isinstance(err, Exception)  # no `except Exception` in an engine swallows it


def test_an_error_inside_the_section_is_not_replaced() -> None:
    with pytest.raises(ValueError):
        with preempt.graceful():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            raise ValueError("the engine's own error")

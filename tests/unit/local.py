"""A RunContext as `gpubatch run` makes one, for tests that call an engine directly."""

from __future__ import annotations

from typing import Any

from gpubatch_jobs.contract import instruction_for_policy
from gpubatch_jobs.runtime import RunContext


def run_context(spec: Any, **fields: Any) -> RunContext:
    """The spec's device policy turned into the instruction (the caller's job, never the engine's)."""
    return RunContext(instruction=instruction_for_policy(str(spec.device.policy)), **fields)

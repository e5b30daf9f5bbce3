"""The registry that maps a kind to its engine, imported only when it runs.

Each engine package exposes `run(spec, ctx) -> dict`: it does the work and
returns the summary JSON (throughput, batch size used, device, metrics).
Importing an engine may import heavy frameworks, so the CLI and the operator
go through this table instead of importing engines at the top.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gpubatch_jobs.contract import KINDS
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec.common import CommonSpec

ENGINES = {kind: info.engine for kind, info in KINDS.items()}

Engine = Callable[[Any, RunContext], dict[str, Any]]


def engine_for(kind: str) -> Engine:
    module = importlib.import_module(ENGINES[kind])
    return module.run  # type: ignore[no-any-return]


def run_engine(kind: str, spec: CommonSpec, ctx: RunContext) -> dict[str, Any]:
    summary = engine_for(kind)(spec, ctx)
    summary.setdefault("kind", kind)
    return summary

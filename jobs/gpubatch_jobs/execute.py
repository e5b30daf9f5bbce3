"""Run one spec through its engine and turn the outcome into an exit code.

Shared by `gpubatch run` (laptop) and `gpubatch-job` (pod) so that both
report errors and summaries the same way.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from gpubatch_jobs.engines import run_engine
from gpubatch_jobs.errors import EXIT_BAD_INPUT, EXIT_OK, GpubatchError
from gpubatch_jobs.podreport import write_termination_log
from gpubatch_jobs.runtime import RunContext, close_progress_line
from gpubatch_jobs.spec import SpecError
from gpubatch_jobs.spec.common import CommonSpec

log = logging.getLogger("gpubatch")


def execute(kind: str, spec: CommonSpec, ctx: RunContext, *, termination_log: bool) -> int:
    """Run the engine; print the summary JSON as the last stdout line; return the exit code."""
    started = time.time()
    try:
        summary: dict[str, Any] = run_engine(kind, spec, ctx)
        code = EXIT_OK
    except SpecError as err:
        summary, code = _failure(kind, "BadSpec", str(err), EXIT_BAD_INPUT), EXIT_BAD_INPUT
    except GpubatchError as err:
        summary, code = _failure(kind, type(err).__name__, str(err), err.exit_code), err.exit_code
    except KeyboardInterrupt:
        raise
    except MemoryError as err:
        summary, code = _failure(kind, "OutOfMemory", f"host out of memory: {err}", 3), 3
    summary.setdefault("elapsedSeconds", round(time.time() - started, 3))
    close_progress_line()
    if code != EXIT_OK:
        print(f"error: {summary['message']}", file=sys.stderr)
    if termination_log:
        write_termination_log(summary)
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return code


def _failure(kind: str, reason: str, message: str, code: int) -> dict[str, Any]:
    return {"kind": kind, "ok": False, "reason": reason, "message": message, "exitCode": code}

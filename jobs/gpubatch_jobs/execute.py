"""Run one spec through its engine and turn the outcome into an exit code.

Shared by `gpubatch run` (laptop) and `gpubatch-job` (pod) so that both
report errors and summaries the same way. The exit codes are the contract's
(gpubatch_jobs/contract.py): 1 only for bad input, 75 for a GPU that is
unusable or fails mid-run (not out of memory) on a run told to use the GPU,
and 2 for anything unforeseen, which the Job retries.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

from gpubatch_jobs.contract import (
    EXIT_BAD_INPUT,
    EXIT_GPU_UNUSABLE,
    EXIT_HOST_OOM,
    EXIT_OK,
    EXIT_UNEXPECTED,
)
from gpubatch_jobs.errors import GpubatchError, excerpt
from gpubatch_jobs.kinds import find
from gpubatch_jobs.podreport import write_termination_log
from gpubatch_jobs.runtime import RunContext, close_progress_line
from gpubatch_jobs.spec import SpecError
from gpubatch_jobs.spec.common import CommonSpec

log = logging.getLogger("gpubatch")


def execute(kind: str, spec: CommonSpec, ctx: RunContext, *, termination_log: bool) -> int:
    """Run the engine; print the summary JSON as the last stdout line; return the exit code."""
    started = time.time()
    try:
        summary: dict[str, Any] = find(kind).run(spec, ctx)
        code = EXIT_OK
    except SpecError as err:
        summary, code = _failure(kind, "BadSpec", str(err), EXIT_BAD_INPUT), EXIT_BAD_INPUT
    except GpubatchError as err:
        summary, code = _failure(kind, type(err).__name__, str(err), err.exit_code), err.exit_code
    except (KeyboardInterrupt, SystemExit):
        raise
    except MemoryError as err:
        summary, code = _failure(kind, "OutOfMemory", f"host out of memory: {err}", EXIT_HOST_OOM), EXIT_HOST_OOM
    except Exception as err:  # noqa: BLE001 - the pod's exit code must say what kind of failure this was
        summary, code = unexpected(kind, err, on_gpu=ctx.instruction is not None and ctx.instruction.device == "gpu")
    summary.setdefault("elapsedSeconds", round(time.time() - started, 3))
    close_progress_line()
    if code != EXIT_OK:
        print(f"error: {summary['message']}", file=sys.stderr)
    if termination_log:
        write_termination_log(summary)
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return code


def unexpected(kind: str, err: BaseException, *, on_gpu: bool) -> tuple[dict[str, Any], int]:
    """An exception no engine foresaw: a GPU failure on the GPU exits 75, anything else is retried."""
    from gpubatch_jobs.devices.oom import is_gpu_failure

    traceback.print_exception(err, file=sys.stderr)
    text = f"{type(err).__name__}: {excerpt(err, 200)}"  # its text may quote data: an excerpt only
    if on_gpu and is_gpu_failure(err):
        message = f"the GPU failed mid-run (exit 75; the operator re-runs on the CPU if allowed): {text}"
        return _failure(kind, "GpuFailed", message, EXIT_GPU_UNUSABLE), EXIT_GPU_UNUSABLE
    message = f"unexpected error (exit {EXIT_UNEXPECTED}, retried up to backoffLimit): {text}"
    return _failure(kind, "UnexpectedError", message, EXIT_UNEXPECTED), EXIT_UNEXPECTED


def _failure(kind: str, reason: str, message: str, code: int) -> dict[str, Any]:
    return {"kind": kind, "ok": False, "reason": reason, "message": message, "exitCode": code}

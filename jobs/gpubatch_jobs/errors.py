"""Exceptions the engines raise, and the exit code each one ends the pod with.

The codes and their meaning are the contract's (gpubatch_jobs/contract.py):
0 success; 1 bad spec or data (permanent, never retried); 75 the GPU is
unusable or failed (the operator re-runs on CPU when
`device.fallbackOnGpuFailure` allows); anything else, unexpected errors (2)
included, is retried up to `backoffLimit`.
"""

from __future__ import annotations

from gpubatch_jobs.contract import EXIT_BAD_INPUT, EXIT_GPU_UNUSABLE, EXIT_OK, EXIT_UNEXPECTED

__all__ = ["EXIT_BAD_INPUT", "EXIT_GPU_UNUSABLE", "EXIT_OK", "BadInput", "GpuUnusable", "GpubatchError"]


class GpubatchError(Exception):
    """Base of the engine's own errors; `exit_code` is what the pod exits with."""

    exit_code = EXIT_UNEXPECTED


class BadInput(GpubatchError):
    """The spec or the data is wrong: retrying cannot help. Name the field or file."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None) -> None:
        self.field = field
        self.path = path
        where = field or path
        super().__init__(f"{where}: {message}" if where else message)


class GpuUnusable(GpubatchError):
    """A GPU was required but cannot be used (missing, broken, failing its smoke test or failing mid-run)."""

    exit_code = EXIT_GPU_UNUSABLE

"""Exceptions the engines raise, and the exit codes the operator reads from them.

The exit code is the contract between engine and operator (DESIGN.md):
0 success; 1 bad spec or data (permanent, never retried); 75 GPU requested but
unusable (the operator re-runs on CPU when `fallbackOnGpuFailure` allows);
anything else is retried up to `backoffLimit`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_GPU_UNUSABLE = 75  # EX_TEMPFAIL: "try again elsewhere"


class GpubatchError(Exception):
    """Base of the engine's own errors; `exit_code` is what the pod exits with."""

    exit_code = 2


class BadInput(GpubatchError):
    """The spec or the data is wrong: retrying cannot help. Name the field or file."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None) -> None:
        self.field = field
        self.path = path
        where = field or path
        super().__init__(f"{where}: {message}" if where else message)


class GpuUnusable(GpubatchError):
    """A GPU was required but cannot be used (missing, broken or failing its smoke test)."""

    exit_code = EXIT_GPU_UNUSABLE

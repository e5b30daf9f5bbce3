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


# What comes from data (column names, values, a reader's own error text) is quoted in a
# message only as a short, printable excerpt: messages end up in status.message and Events,
# readable by anyone who may `get` the resource, and must never carry a file's contents.
EXCERPT_CHARS = 40
EXCERPT_ITEMS = 5
MESSAGE_LIMIT = 600  # the most of any message that reaches the termination log, status or an Event


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`value` quoted, printable ASCII only, at most `limit` characters of it."""
    text = str(value)
    shown = _printable(text[:limit])
    return f"'{shown}'" + (f"...({len(text)} chars)" if len(text) > limit else "")


def excerpts(values: object, count: int = EXCERPT_ITEMS, limit: int = EXCERPT_CHARS) -> str:
    """The first `count` of `values`, each an `excerpt`, and how many more there are."""
    items = list(values)  # type: ignore[call-overload]
    shown = ", ".join(excerpt(v, limit) for v in items[:count])
    more = f", ... ({len(items) - count} more)" if len(items) > count else ""
    return f"[{shown}{more}]"


def safe_message(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message as it may leave the pod or the operator: printable ASCII, at most `limit` characters."""
    text = _printable(" ".join(str(message).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."

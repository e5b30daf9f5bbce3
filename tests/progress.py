"""Where a running `gpubatch run --progress-file FILE` is, for tests that signal a job mid-epoch.

A fixed delay after a checkpoint lands before the next epoch's first step on a loaded machine (the
checkpoint's upload, validation and the next epoch's start take longer there); the progress file
says which step the job has reached.
"""

from __future__ import annotations

import json
from pathlib import Path


def steps_into_epoch(progress: Path, epoch: int, epochs: int) -> int:
    """Steps the job has reported done in epoch `epoch` (1-based) of `epochs`; 0 before it or after it."""
    try:
        event = json.loads(progress.read_text())
    except (OSError, ValueError):
        return 0
    if event.get("stage") != f"epoch {epoch}/{epochs}" or not event.get("total"):
        return 0
    return int(event["done"]) - (epoch - 1) * (int(event["total"]) // epochs)

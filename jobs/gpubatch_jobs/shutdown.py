"""End the process as soon as its outputs are out.

Tearing down a process that loaded TensorFlow takes a second or two (its
threads, graphs and shared libraries) and produces nothing a user needs:
outputs are complete and renamed, the summary printed and the termination
log written before this runs. A process that fails while the prediction
engine's warm-up thread is still importing TensorFlow (bad input found
first) must not wait for that import either, nor tear the interpreter down
under it. Spark's shutdown is left to the normal exit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

BACKGROUND_PREFIX = "gpubatch-background-"


def background_work() -> bool:
    """Whether one of our background threads (e.g. the prediction warm-up) is still running."""
    return any(thread.name.startswith(BACKGROUND_PREFIX) and thread.is_alive() for thread in threading.enumerate())


def exit_now(code: int) -> None:
    """`os._exit(code)` after flushing, where the normal teardown would only cost time; else return."""
    if "pyspark" in sys.modules:
        return
    if "tensorflow" not in sys.modules and not background_work():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

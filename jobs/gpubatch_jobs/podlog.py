"""Logs that outlive pods: the job pod keeps its own log next to its outputs.

`kubectl logs` and `gpubatch logs` read a pod's log from the kubelet only while
the pod exists; a TTL-deleted Job, an evicted pod or a failed GPU attempt
before its CPU re-run takes it along. So the pod's entrypoint passes its
stdout and stderr through pipes (everything still reaches the container's own
streams, so `kubectl logs` is unchanged), keeps the last `LOG_LIMIT` bytes
(1 MiB) of both, and writes them every few seconds and at exit as one file per
pod under `log_folder(spec.output.path)` (the contract's): `pvc://` and local
paths through a temporary name renamed into place, `s3://` as one whole
object. Pod names differ per attempt, retry, worker and shard, so every
attempt's log is kept. The operator records the same folder in
`status.logRef`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

from gpubatch_jobs.contract import ENV_POD_NAME, LOG_LIMIT, log_file_name, log_folder
from gpubatch_jobs.storage import join, object_store, split_pvc

log = logging.getLogger("gpubatch")

WRITE_INTERVAL_S = 10.0
DROPPED_NOTE = b"(gpubatch: earlier output dropped; this file keeps the last %d bytes)\n"


class PodLog:
    """Tee fds 1 and 2; keep the tail; write it to `<output>.logs/<pod>.log`."""

    def __init__(self, pod_name: str, *, limit: int = LOG_LIMIT, interval_s: float = WRITE_INTERVAL_S) -> None:
        self.pod_name = pod_name
        self.limit = limit
        self.interval_s = interval_s
        self.buffer = bytearray()
        self.dropped = False
        self.dirty = False
        self.lock = threading.Lock()
        self.target: str | None = None  # the log folder as the spec names it
        self.pvc_root: Path | None = None
        self.base_dir: Path = Path.cwd()
        self._saved: dict[int, int] = {}
        self._pumps: list[threading.Thread] = []
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    @classmethod
    def from_environment(cls) -> PodLog | None:
        """A keeper in a job pod (POD_NAME from the downward API); None elsewhere."""
        pod = os.environ.get(ENV_POD_NAME)
        return cls(pod) if pod else None

    # --- capture -------------------------------------------------------------------------------

    def start(self) -> None:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            stream.flush()
            saved = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved[fd] = saved
            pump = threading.Thread(target=self._pump, args=(read_end, saved), daemon=True,
                                    name=f"gpubatch-log-pump-{fd}")
            pump.start()
            self._pumps.append(pump)
        self._writer = threading.Thread(target=self._write_loop, daemon=True, name="gpubatch-log-writer")
        self._writer.start()

    def _pump(self, read_end: int, out: int) -> None:
        while True:
            try:
                data = os.read(read_end, 65536)
            except OSError:
                break
            if not data:
                break
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(out, view):]
                except OSError:
                    break
            self.append(data)
        os.close(read_end)

    def append(self, data: bytes) -> None:
        with self.lock:
            self.buffer += data
            if len(self.buffer) > self.limit:
                del self.buffer[: len(self.buffer) - self.limit]
                self.dropped = True
            self.dirty = True

    def text(self) -> bytes:
        with self.lock:
            body = bytes(self.buffer)
            return (DROPPED_NOTE % self.limit if self.dropped else b"") + body

    # --- where it goes -------------------------------------------------------------------------

    def keep_beside(self, output_path: str, *, pvc_root: Path | None, base_dir: Path) -> None:
        """From now on, write the log beside this output (the spec is known)."""
        self.target = log_folder(output_path)
        self.pvc_root = pvc_root
        self.base_dir = base_dir
        self.dirty = True

    def place(self) -> str | Path | None:
        """The log file: an object-store URL or a local path (pvc:// resolved under the mount root)."""
        if self.target is None:
            return None
        name = log_file_name(self.pod_name)
        if object_store(self.target) is not None:
            return join(self.target, name)
        pvc = split_pvc(self.target)
        if pvc is not None:
            if self.pvc_root is None:
                return None
            claim, sub = pvc
            return self.pvc_root / claim / sub / name
        folder = Path(self.target)
        return (folder if folder.is_absolute() else self.base_dir / folder) / name

    def write(self) -> None:
        """Write the tail under its final name (complete files only); errors are logged, never raised."""
        place = self.place()
        if place is None:
            return
        with self.lock:
            self.dirty = False
        data = self.text()
        try:
            if isinstance(place, str):
                from gpubatch_jobs import storage

                storage.write_bytes(place, data)
            else:
                place.parent.mkdir(parents=True, exist_ok=True)
                partial = place.with_name(f".{place.name}.partial-{os.getpid()}")
                partial.write_bytes(data)
                os.replace(partial, place)
        except Exception as err:  # noqa: BLE001 - keeping the log must never fail the job
            log.debug("cannot keep the log at %s: %s", place, err)

    def _write_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.dirty:
                self.write()

    def stop(self) -> None:
        """Give fds 1 and 2 back, drain the pipes, write the log one last time."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # the pipe's last write end here closes: its pump sees EOF
        deadline = time.monotonic() + 2.0
        for pump in self._pumps:  # a child process still holding the pipe must not hold the pod
            pump.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        self.write()
        # The saved descriptors stay open: a pump still fed by a child (a Spark JVM) keeps writing
        # to them, and a closed number could be reused by another file. The process ends next.
        self._saved.clear()


_current: PodLog | None = None


def start_from_environment() -> PodLog | None:
    global _current
    _current = PodLog.from_environment()
    if _current is not None:
        _current.start()
    return _current


def current() -> PodLog | None:
    return _current

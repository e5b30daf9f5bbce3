"""What every engine gets from its caller: paths, progress, the device instruction, shard.

The same engine code runs under `gpubatch run` on a laptop and under
`gpubatch-job` in a pod; `RunContext` is the one place where the two differ
(where `pvc://` paths live, where progress goes, which shard this is).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpubatch_jobs.contract import ContractError, DeviceInstruction
from gpubatch_jobs.errors import BadInput, excerpt
from gpubatch_jobs.storage import PVC_PREFIX, Place, object_store, split_pvc, url_forms

log = logging.getLogger("gpubatch")

__all__ = ["PVC_PREFIX", "RunContext", "split_pvc"]

PROGRESS_INTERVAL_S = 5.0

ProgressSink = Callable[[dict[str, Any]], None]


@dataclass
class RunContext:
    """Where an engine run happens: how to find files, report progress, pick a device."""

    name: str = "job"
    base_dir: Path = field(default_factory=Path.cwd)
    mounts: dict[str, Path] = field(default_factory=dict)
    pvc_root: Path | None = None
    # In a job pod (gpubatch-job): only pvc:// and object-store paths, and a pvc:// path must really
    # lead (symlinks followed) to a place under its claim's mount. See `resolve`.
    confined: bool = False
    # The device instruction: the operator's (a pod), or `gpubatch run`'s, made from --device or
    # the spec's policy by contract.instruction_for_policy. Engines read this, never the policy.
    instruction: DeviceInstruction | None = None
    # None: this process renders every shard; an int: only that one (Indexed Job pod).
    shard_index: int | None = None
    progress_sinks: list[ProgressSink] = field(default_factory=list)
    progress_interval_s: float = PROGRESS_INTERVAL_S
    _last_progress: float = field(default=0.0, repr=False)
    _sink_failed: bool = field(default=False, repr=False)  # the first failing report is a warning
    # (stage, first time, done then): the rate and ETA are measured from a stage's first report.
    _rate_start: tuple[str, float, int] | None = field(default=None, repr=False)

    def resolve(self, path: str, *, field_name: str = "path") -> Path:
        """The local filesystem path for a spec path (local, relative or pvc://), normalised.

        Absolute, with `..` and `.` folded (symlinks kept), so messages name
        `/work/data/x` rather than `cases/30/../../data/x`.

        Confined (a job pod): a local path is refused, and a pvc:// path is
        returned as its real path, every symlink followed, which must lie under
        the claim's mount: `pvc://data/link` where `link` points at
        /var/run/secrets/... is refused here, just before the file is opened.
        """
        store = object_store(path)
        if store is not None:
            raise BadInput(f"{path}: {store.prefix} is not accepted here; use a local or pvc:// path",
                           field=field_name)
        pvc = split_pvc(path)
        if pvc is None:
            if self.confined:
                raise BadInput(f"{excerpt(path)}: a job pod reads and writes only {url_forms()} paths; put the "
                               "data on a claim or in a bucket", field=field_name)
            local = Path(path).expanduser()
            return _normal(local if local.is_absolute() else self.base_dir / local)
        claim, sub = pvc
        root = self.mounts.get(claim) or (self.pvc_root / claim if self.pvc_root is not None else None)
        if root is not None and self.confined:
            return confine(root, sub, path, field_name)
        if root is not None:
            return _normal(root / sub)
        raise BadInput(
            f"{path} names the PersistentVolumeClaim {claim!r}, which is not mounted here; "
            f"run with --mount {claim}=./some/folder",
            field=field_name,
        )

    # Paths that may be object-store URLs (gpubatch_jobs.storage's drivers are the one place that handles them).

    def input_file(self, path: str, *, field_name: str = "path") -> Path:
        """A local file holding the input at `path` (an object-store URL is downloaded to scratch)."""
        if object_store(path) is not None:
            from gpubatch_jobs import storage

            return storage.local_input(path, field_name=field_name)
        return self.resolve(path, field_name=field_name)

    def input_dir(self, path: str, *, field_name: str = "path") -> Path:
        """A local folder holding the input folder at `path` (an object-store prefix is downloaded).

        Confined, every entry of a pvc:// folder must lead under the claim too (a
        model folder's `model.keras` may not be a symlink to a file elsewhere)."""
        if object_store(path) is not None:
            from gpubatch_jobs import storage

            return storage.local_input_dir(path.rstrip("/"), field_name=field_name)
        folder = self.resolve(path, field_name=field_name)
        pvc = split_pvc(path)
        if self.confined and pvc is not None and folder.is_dir():
            root = self.mounts.get(pvc[0]) or (self.pvc_root / pvc[0] if self.pvc_root is not None else folder)
            for entry in folder.rglob("*"):
                if entry.is_symlink():
                    confine(root, str(entry.relative_to(root.resolve())), path, field_name)
        return folder

    def output_file(self, path: str, *, field_name: str = "path") -> tuple[Place, str]:
        """(place, name): write `place.path(name)`, then `place.push(name)` publishes it."""
        if object_store(path) is not None:
            from gpubatch_jobs import storage

            place, name = storage.output_file(path)
            storage.check_reachable(place, field_name)
            return place, name
        final = self.resolve(path, field_name=field_name)
        return Place(final.parent), final.name

    def output_folder(self, path: str, *, field_name: str = "path") -> Place:
        """The output folder at `path`; an object-store prefix is mirrored in local scratch."""
        if object_store(path) is not None:
            from gpubatch_jobs import storage

            place = storage.output_folder(path.rstrip("/"))
            storage.check_reachable(place, field_name)
            return place
        return Place(self.resolve(path, field_name=field_name))

    def device_instruction(self) -> DeviceInstruction:
        """The instruction this run was given by its caller (the pod's entrypoint, `gpubatch run`)."""
        if self.instruction is None:
            raise ContractError("the run has no device instruction: its caller turns the device policy into "
                                "one (contract.instruction_for_policy) before the engine starts")
        return self.instruction

    def progress(self, done: int, total: int, *, stage: str = "", force: bool = False, **extra: Any) -> None:
        """Report progress; sinks are called at most every `progress_interval_s` seconds."""
        now = time.monotonic()
        if not force and done < total and now - self._last_progress < self.progress_interval_s:
            return
        self._last_progress = now
        event = {"done": int(done), "total": int(total), "stage": stage, **self._rate(stage, now, done, total), **extra}
        for sink in self.progress_sinks:
            try:
                sink(event)
            except Exception as err:  # progress must never kill the job
                (log.debug if self._sink_failed else log.warning)("progress report failed: %s", err)
                self._sink_failed = True


    def _rate(self, stage: str, now: float, done: int, total: int) -> dict[str, float]:
        """`perSecond` (items of this stage per second since its first report) and `etaSeconds`
        (what is left at that rate); empty until the stage has moved."""
        start = self._rate_start
        if start is None or start[0] != stage or done < start[2]:
            self._rate_start = (stage, now, int(done))
            return {}
        elapsed, moved = now - start[1], int(done) - start[2]
        if elapsed <= 0 or moved <= 0:
            return {}
        rate = moved / elapsed
        return {"perSecond": round(rate, 3), "etaSeconds": round(max(0, int(total) - int(done)) / rate, 1)}


def _normal(path: Path) -> Path:
    return Path(os.path.abspath(path))


def confine(root: Path, sub: str, path: str, field_name: str) -> Path:
    """The real path of `root/sub` (symlinks followed); BadInput unless it lies under root's real path.

    The message names the path as written (an excerpt), never where a symlink led."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, sub))
    if target != real_root and not target.startswith(real_root.rstrip(os.sep) + os.sep):
        raise BadInput(f"{excerpt(path)} leads outside its claim's volume (a symlink or '..'); name a file that "
                       "lies on the claim itself", field=field_name)
    return Path(target)


def format_progress(done: int, total: int) -> str:
    """The short form shown in `kubectl get` (status.progress)."""
    if total <= 0:
        return "0%"
    return f"{min(100, int(100 * done / total))}%"


_bar_line_open = False


def format_eta(seconds: float | None) -> str:
    """`ETA 1m05s` for a bar or a table; empty when unknown."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(done: int, total: int, stage: str = "", eta_seconds: float | None = None) -> str:
    """One progress bar line: the same under `gpubatch run` and `gpubatch submit`."""
    width = 30
    filled = min(width, int(width * done / total)) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    eta = f" ETA {format_eta(eta_seconds)}" if eta_seconds is not None and done < total else ""
    return f"[{bar}] {done}/{total} {format_progress(done, total)}{f' {stage}' if stage else ''}{eta}"


def write_bar(line: str, final: bool) -> None:
    global _bar_line_open
    sys.stderr.write(f"\r{line}   {chr(10) if final else ''}")
    sys.stderr.flush()
    _bar_line_open = not final


def stderr_progress_bar(event: dict[str, Any]) -> None:
    done, total = event["done"], event["total"]
    write_bar(progress_line(done, total, event.get("stage") or "", event.get("etaSeconds")), done >= total)


def close_progress_line() -> None:
    """End a progress bar left mid-line, so the next message starts on a line of its own."""
    global _bar_line_open
    if _bar_line_open:
        sys.stderr.write("\n")
        _bar_line_open = False


def atomic_target(final: Path) -> Path:
    """A temporary sibling of `final`, for writing before `os.replace` publishes it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write text so the final name only ever holds a complete file."""
    tmp = atomic_target(Path(path))
    tmp.write_text(text)
    os.replace(tmp, path)

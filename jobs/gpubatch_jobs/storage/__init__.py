"""Where data lives: local paths, `pvc://CLAIM/sub` and object stores (`s3://`, `gs://`, `az://`).

Every engine and the CLI go through this package for paths; nothing else
parses a scheme or talks to object storage. Each scheme is one driver
(`driver.py` holds the interface and the registry; one module per scheme),
so callers ask `object_store(url)` and never test a scheme themselves.

Reading: `local_input(url)` gives a local file for an object URL, downloaded
once into scratch (`$GPUBATCH_SCRATCH`, else `$TMPDIR/gpubatch-scratch`; in a
pod `/tmp`, an emptyDir) to a temporary name renamed when complete, and
reused while its size and modification time stay the same.
`local_input_dir(url)` does the same for a prefix (a TrainJob artifact
folder).

Writing: `output_place(url)` is a folder, local or remote. Engines write into
`place.local_dir` exactly as they write a local folder (HDF5 needs random
writes, so it is always built on local disk), then `place.push(name)`
publishes a finished file; each driver publishes atomically, so an object
appears under its final name only when whole. On a local place `push` does
nothing: the file is already in its final place.

A missing bucket or container, refused credentials and a missing object are
`BadInput` (exit 1) naming the URL and what to fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.storage.arrow import PARTIAL_MARK
from gpubatch_jobs.storage.driver import (
    Driver,
    ObjectInfo,
    ObjectStore,
    driver_for,
    object_store,
    scheme_of,
    schemes,
    store_of,
    url_forms,
)

__all__ = [
    "PARTIAL_MARK", "PVC_PREFIX", "Driver", "ObjectInfo", "ObjectStore", "Place", "check_reachable", "delete",
    "delete_prefix", "download", "driver_for", "exists", "is_url", "join", "list_objects", "local_input",
    "local_input_dir", "object_store", "output_file", "output_folder", "parent_and_name", "read_bytes",
    "scheme_of", "schemes", "scratch_for", "scratch_root", "split_pvc", "stat", "store_of", "upload",
    "url_forms", "write_bytes",
]

log = logging.getLogger("gpubatch.storage")

PVC_PREFIX = "pvc://"


# ---------------------------------------------------------------------------------------------- URLs


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for any scheme's URL (pvc:// or an object store), False for a local path."""
    return scheme_of(str(path)) is not None


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name.lstrip("/")


def parent_and_name(url: str) -> tuple[str, str]:
    """`s3://b/a/x.h5` -> (`s3://b/a`, `x.h5`)."""
    store = store_of(url)
    root, key = store.parse(url)
    head, _, name = key.rpartition("/")
    if not name:
        raise BadInput(f"{url} names a {store.root_word}, not an object; add the file name, e.g. "
                       f"{join(url, 'out.h5')}", path=url)
    return store.url(root, head), name


def split_pvc(path: str) -> tuple[str, str] | None:
    """(claim, sub/path) for `pvc://claim/sub/path`, else None."""
    driver = driver_for(path)
    if driver is None or driver.remote:
        return None
    return driver.parse(path)


def scratch_root() -> Path:
    root = os.environ.get("GPUBATCH_SCRATCH") or os.path.join(tempfile.gettempdir(), "gpubatch-scratch")
    return Path(root)


def scratch_for(url: str, kind: str) -> Path:
    """A local folder of its own for `url` (stable across runs, so a local re-run resumes)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = scratch_root() / kind / digest
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- objects
# Module-level shorthands: the driver of the URL's scheme does the work.


def stat(url: str) -> ObjectInfo | None:
    return store_of(url).stat(url)


def exists(url: str) -> bool:
    return stat(url) is not None


def list_objects(prefix_url: str) -> list[ObjectInfo]:
    return store_of(prefix_url).list(prefix_url)


def download(url: str, dest: Path, mtime_ns: int | None = None) -> None:
    store_of(url).download(url, dest, mtime_ns)


def upload(src: Path, url: str) -> None:
    store_of(url).upload(src, url)


def write_bytes(url: str, data: bytes) -> None:
    store_of(url).write_bytes(url, data)


def read_bytes(url: str) -> bytes:
    return store_of(url).read_bytes(url)


def delete(url: str) -> None:
    store_of(url).delete(url)


def delete_prefix(url: str) -> None:
    for info in list_objects(url):
        delete(join(url, info.key))


# ---------------------------------------------------------------------------------------------- inputs


def local_input(url: str, *, field_name: str) -> Path:
    """A local copy of the object at `url` (downloaded once, reused while unchanged)."""
    store = store_of(url)
    info = store.stat(url)
    if info is None:
        store.check_root(url, "read")
        if store.list(url):
            return local_input_dir(url, field_name=field_name)
        raise BadInput(f"no object at {url}; check the key (list it with `{store.list_command(url)}`)",
                       field=field_name)
    _, name = parent_and_name(url)
    folder = scratch_for(url, "inputs")
    dest = folder / name
    stamp = folder / f".{name}.source.json"
    want = {"url": url, "size": info.size, "mtime_ns": info.mtime_ns}
    if dest.is_file() and stamp.is_file() and _read_json(stamp) == want and dest.stat().st_size == info.size:
        return dest
    started = time.perf_counter()
    store.download(url, dest, info.mtime_ns)
    stamp.write_text(json.dumps(want))
    log.info("downloaded %s (%.1f MB) in %.1f s", url, info.size / 1e6, time.perf_counter() - started)
    return dest


def local_input_dir(url: str, *, field_name: str) -> Path:
    """A local copy of every object under the prefix `url` (a TrainJob artifact folder)."""
    store = store_of(url)
    objects = [o for o in store.list(url) if PARTIAL_MARK not in o.key]
    if not objects:
        if store.stat(url) is not None:
            raise BadInput(f"{url} is an object; this field names a folder (its prefix)", field=field_name)
        store.check_root(url, "read")
        raise BadInput(f"nothing under {url}/; check the prefix (list it with `{store.list_command(url + '/')}`)",
                       field=field_name)
    folder = scratch_for(url, "inputs")
    for info in objects:
        dest = folder / info.key
        if dest.is_file() and dest.stat().st_size == info.size and dest.stat().st_mtime_ns == info.mtime_ns:
            continue
        store.download(join(url, info.key), dest, info.mtime_ns)
    return folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- outputs


class Place:
    """An output folder: `local_dir` is where engines write; `push` publishes a finished file.

    Local (and pvc://) places are their own folder: push/pull/delete do nothing
    there, since what is written is already in its final place.
    """

    def __init__(self, local_dir: Path, remote: str | None = None) -> None:
        self.local_dir = Path(local_dir)
        self.remote = remote.rstrip("/") if remote else None

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def path(self, name: str) -> Path:
        return self.local_dir / name

    def url(self, name: str) -> str:
        return join(self.remote, name) if self.remote else str(self.local_dir / name)

    def show(self, local: Path | str | None) -> str | None:
        """How to name a local file of this place to a user: its URL when remote."""
        if local is None:
            return None
        if not self.remote:
            return str(local)
        rel = os.path.relpath(local, self.local_dir)
        if rel == ".":
            return self.remote
        return self.url(rel) if not rel.startswith("..") else str(local)

    def remote_exists(self, name: str) -> bool:
        return exists(self.url(name)) if self.remote else self.path(name).exists()

    def pull(self, name: str) -> bool:
        """Bring the remote object `name` into `local_dir` (replacing a local copy); True if it exists."""
        if not self.remote:
            return self.path(name).exists()
        if stat(self.url(name)) is None:
            self.path(name).unlink(missing_ok=True)
            return False
        download(self.url(name), self.path(name))
        return True

    def pull_all(self, sub: str = "") -> list[str]:
        """Mirror every remote object under `sub` locally (stale local files under `sub` removed)."""
        if not self.remote:
            return []
        base = join(self.remote, sub) if sub else self.remote
        objects = [o for o in list_objects(base) if PARTIAL_MARK not in o.key]
        names = [f"{sub}/{o.key}" if sub else o.key for o in objects]
        local_base = self.local_dir / sub if sub else self.local_dir
        if local_base.exists():
            keep = {self.local_dir / n for n in names}
            for path in list(local_base.rglob("*")):
                if path.is_file() and path not in keep:
                    path.unlink()
        for name in names:
            download(self.url(name), self.path(name))
        return names

    def push(self, name: str) -> None:
        """Publish the finished local file `name` under its final key."""
        if not self.remote:
            return
        started = time.perf_counter()
        upload(self.path(name), self.url(name))
        log.info("uploaded %s in %.1f s", self.url(name), time.perf_counter() - started)

    def push_tree(self, sub: str) -> None:
        if not self.remote:
            return
        for path in sorted((self.local_dir / sub).rglob("*")):
            if path.is_file() and PARTIAL_MARK not in path.name:
                self.push(str(path.relative_to(self.local_dir)))

    def delete(self, name: str) -> None:
        if self.remote:
            delete(self.url(name))

    def delete_tree(self, sub: str, keep: str | None = None, also_keep: str | None = None) -> None:
        """Delete remote objects under `sub`, except `sub/also_keep` and those under `sub/keep/`."""
        if not self.remote:
            return
        base = join(self.remote, sub)
        for info in list_objects(base):
            if keep and info.key.startswith(keep + "/") or info.key == also_keep:
                continue
            delete(join(base, info.key))

    def finish(self) -> None:
        """After success: drop the local scratch copy of a remote place, and what killed publishes left there."""
        if self.remote:
            shutil.rmtree(self.local_dir, ignore_errors=True)
            store_of(self.remote).tidy(self.remote)


def output_folder(url: str) -> Place:
    """A folder output (TrainJob): remote prefix mirrored in scratch."""
    return Place(scratch_for(url.rstrip("/"), "outputs"), url)


def output_file(url: str) -> tuple[Place, str]:
    """A file output (RenderJob, PredictJob): the place of its folder and its name."""
    parent, name = parent_and_name(url)
    return Place(scratch_for(url, "outputs"), parent), name


def check_reachable(place: Place, field_name: str) -> None:
    """Fail early (exit 1, before any work) when the bucket is missing or the credentials are refused."""
    if not place.remote:
        return
    store = store_of(place.remote)
    try:
        store.check_root(place.remote, "write")
        store.list(place.remote)
    except BadInput as err:
        raise BadInput(str(err), field=field_name) from err

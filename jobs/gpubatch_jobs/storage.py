"""Where data lives: local paths, `pvc://CLAIM/sub` and `s3://BUCKET/KEY`, in one place.

Every engine and the CLI go through this module for paths; nothing else
parses `s3://` or talks to object storage.

Reading: `local_input(url)` gives a local file for any path. An `s3://`
object is downloaded once into scratch (`$GPUBATCH_SCRATCH`, else
`$TMPDIR/gpubatch-scratch`; in a pod `/tmp`, an emptyDir), to a temporary name
renamed when complete, and reused while its size and modification time stay
the same. `local_input_dir(url)` does the same for a prefix (a TrainJob
artifact folder).

Writing: `output_place(url)` is a folder, local or remote. Engines write into
`place.local_dir` exactly as they write a local folder (HDF5 needs random
writes, so it is always built on local disk), then `place.push(name)` uploads
a finished file. On a local place `push` does nothing: the file is already in
its final place. An upload is one PutObject, or a multipart upload completed
only after its last part, so an object appears under its final key only when
whole; a killed process never completes one. Uploads that fail on a dropped
connection or a throttled request are retried by the S3 client
(`AwsStandardS3RetryStrategy`, `GPUBATCH_S3_RETRIES` attempts per request)
and, since an upload from a complete local file is idempotent, the whole
upload is retried too (`GPUBATCH_S3_UPLOAD_TRIES`, backing off up to ~1 min).

Credentials and endpoint come from the standard AWS settings: the
environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_REGION`), the shared config and
credentials files (`AWS_PROFILE`), web identity (IRSA) and instance metadata,
through pyarrow's S3 filesystem (the AWS C++ SDK). In a pod the operator maps
the Secret named by `spec.storage.secretName` to those variables.

A missing bucket, a wrong key or secret, a denied request and a missing
object are `BadInput` (exit 1) naming the URL and what to fix.

Library: pyarrow.fs.S3FileSystem, chosen by measured throughput against
s3fs and obstore (bench/storage.py, docs/storage.md); pyarrow is already in
every image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gpubatch_jobs.errors import BadInput

log = logging.getLogger("gpubatch.storage")

S3_PREFIX = "s3://"
PVC_PREFIX = "pvc://"
PARTIAL_MARK = ".partial"
_CHUNK = 8 << 20
_DOWNLOAD_THREADS = 8

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- URLs


def is_s3(path: str | os.PathLike[str]) -> bool:
    return str(path).startswith(S3_PREFIX)


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key` (key without a leading or trailing slash)."""
    rest = url[len(S3_PREFIX):]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name.lstrip("/")


def parent_and_name(url: str) -> tuple[str, str]:
    """`s3://b/a/x.h5` -> (`s3://b/a`, `x.h5`)."""
    bucket, key = split_s3(url)
    head, _, name = key.rpartition("/")
    if not name:
        raise BadInput(f"{url} names a bucket, not an object; add the file name, e.g. {join(url, 'out.h5')}",
                       path=url)
    return (f"{S3_PREFIX}{bucket}/{head}" if head else f"{S3_PREFIX}{bucket}"), name


def split_pvc(path: str) -> tuple[str, str] | None:
    """(claim, sub/path) for `pvc://claim/sub/path`, else None."""
    if not path.startswith(PVC_PREFIX):
        return None
    claim, _, sub = path[len(PVC_PREFIX):].partition("/")
    return claim, sub


def scratch_root() -> Path:
    root = os.environ.get("GPUBATCH_SCRATCH") or os.path.join(tempfile.gettempdir(), "gpubatch-scratch")
    return Path(root)


def scratch_for(url: str, kind: str) -> Path:
    """A local folder of its own for `url` (stable across runs, so a local re-run resumes)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = scratch_root() / kind / digest
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- client


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


_fs_lock = threading.Lock()
_fs_cache: dict[tuple[Any, ...], Any] = {}


def _settings() -> tuple[Any, ...]:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
            "GPUBATCH_S3_RETRIES")
    return tuple(os.environ.get(key) for key in keys)


def filesystem() -> Any:
    """The pyarrow S3 filesystem for the current AWS settings (cached per settings)."""
    settings = _settings()
    with _fs_lock:
        fs = _fs_cache.get(settings)
        if fs is None:
            fs = _fs_cache[settings] = _make_filesystem()
        return fs


def _make_filesystem() -> Any:
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=_env_int("GPUBATCH_S3_RETRIES", 10)),
        "connect_timeout": 10.0,
        "request_timeout": 120.0,
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if sep:
            kwargs["scheme"], kwargs["endpoint_override"] = scheme, host.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint.rstrip("/")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    elif endpoint:
        kwargs["region"] = "us-east-1"  # S3-compatible servers; avoids a region lookup
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pafs.S3FileSystem(**kwargs)


# ---------------------------------------------------------------------------------------------- errors

_DENIED = ("ACCESS_DENIED", "AccessDenied", "Forbidden", "HTTP response code: 403", "HTTP status 403")
_BAD_KEY = ("INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch")
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket")


def _is_permanent(err: BaseException) -> bool:
    text = str(err)
    return any(mark in text for mark in _DENIED + _BAD_KEY + _NO_BUCKET) or isinstance(err, BadInput)


def explain(err: BaseException, url: str, action: str, probing: bool = False) -> BadInput | None:
    """A BadInput naming `url` and the fix when `err` is a permanent S3 error; None for transient ones."""
    text = str(err)
    bucket, _ = split_s3(url)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if any(mark in text for mark in _BAD_KEY):
        return BadInput(f"cannot {action} {url}: the access key or secret is wrong ({_first_line(text)}); check "
                        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (in a pod: the Secret named by "
                        "spec.storage.secretName)")
    if any(mark in text for mark in _NO_BUCKET):
        return BadInput(f"cannot {action} {url}: bucket {bucket!r} does not exist at {endpoint}; create it or fix "
                        "the bucket name (and AWS_ENDPOINT_URL if it is on another server)")
    if any(mark in text for mark in _DENIED):
        if not probing:
            # A HEAD answer has no body, so "denied" may really be a wrong key: a listing says which.
            probed = _probe_bucket(url)
            if probed is not None:
                friendly = explain(probed, url, action, probing=True)
                if friendly is not None and "access denied" not in str(friendly):
                    return friendly
        return BadInput(f"cannot {action} {url}: access denied ({_first_line(text)}); grant these credentials "
                        f"{'s3:PutObject' if action == 'write' else 's3:GetObject/ListBucket'} on bucket "
                        f"{bucket!r} or use credentials that have it")
    return None


def _probe_bucket(url: str) -> BaseException | None:
    from pyarrow import fs as pafs

    bucket, _ = split_s3(url)
    try:
        filesystem().get_file_info(pafs.FileSelector(bucket, recursive=False, allow_not_found=True))
    except OSError as err:
        return err
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else text


def _call(url: str, action: str, fn: Callable[[], T], *, tries: int | None = None) -> T:
    """Run `fn`, retrying transient failures with backoff; permanent ones become BadInput."""
    tries = tries or _env_int("GPUBATCH_S3_UPLOAD_TRIES", 6)
    delay = 1.0
    for attempt in range(1, tries + 1):
        try:
            return fn()
        except BadInput:
            raise
        except FileNotFoundError as err:
            _check_bucket(url, action)
            raise BadInput(f"no object at {url}; check the key (list it with `aws s3 ls {url}`)") from err
        except (OSError, ValueError) as err:
            friendly = explain(err, url, action)
            if friendly is not None:
                raise friendly from err
            if attempt == tries:
                raise OSError(f"cannot {action} {url} after {tries} tries: {_first_line(str(err))}; check "
                              "that the S3 endpoint (AWS_ENDPOINT_URL) is reachable") from err
            log.warning("%s %s failed (%s); retrying in %.0f s (try %d of %d)", action, url,
                        _first_line(str(err)), delay, attempt, tries)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def _check_bucket(url: str, action: str) -> None:
    """BadInput when the bucket of `url` is missing (object-level 404s do not tell)."""
    from pyarrow import fs as pafs

    bucket, _ = split_s3(url)
    info = _call(url, action, lambda: filesystem().get_file_info(bucket))
    if info.type == pafs.FileType.NotFound:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
        raise BadInput(f"cannot {action} {url}: bucket {bucket!r} does not exist at {endpoint}; create it or fix "
                       "the bucket name (and AWS_ENDPOINT_URL if it is on another server)", path=url)


# ---------------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the listed prefix
    size: int
    mtime_ns: int


def stat(url: str) -> ObjectInfo | None:
    """The object's size and time, or None when there is none."""
    from pyarrow import fs as pafs

    bucket, key = split_s3(url)
    info = _call(url, "read", lambda: filesystem().get_file_info(f"{bucket}/{key}"))
    if info.type != pafs.FileType.File:
        return None
    return ObjectInfo(key, int(info.size or 0), int(info.mtime_ns or 0))


def exists(url: str) -> bool:
    return stat(url) is not None


def list_objects(prefix_url: str) -> list[ObjectInfo]:
    """Every object under the prefix (recursively), keys relative to it; [] when there are none."""
    from pyarrow import fs as pafs

    bucket, key = split_s3(prefix_url)
    base = f"{bucket}/{key}".rstrip("/")
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    infos = _call(prefix_url, "list", lambda: filesystem().get_file_info(selector))
    return [ObjectInfo(info.path[len(base) + 1:], int(info.size or 0), int(info.mtime_ns or 0))
            for info in infos if info.type == pafs.FileType.File]


def download(url: str, dest: Path, mtime_ns: int | None = None) -> None:
    """Copy the object to `dest` (a temporary name, renamed when complete), with the object's time."""
    bucket, key = split_s3(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}{PARTIAL_MARK}-{os.getpid()}")

    def once() -> None:
        source = filesystem().open_input_file(f"{bucket}/{key}")
        size = source.size()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)

            def part(offset: int) -> None:
                os.pwrite(fd, source.read_at(min(_CHUNK, size - offset), offset), offset)

            # Ranged GETs in parallel: about twice one stream's rate (bench/storage.py).
            with ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
                list(pool.map(part, range(0, size, _CHUNK)))
        finally:
            os.close(fd)
            source.close()

    try:
        _call(url, "read", once)
        if mtime_ns:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def upload(src: Path, url: str) -> None:
    """Publish the complete local file `src` as the object `url` (whole or not at all)."""
    bucket, key = split_s3(url)
    from pyarrow import fs as pafs

    def once() -> None:
        # copy_files streams in C++ (parallel part uploads); the multipart upload is completed only
        # when every part succeeded, so a failure or a kill leaves no object under the key.
        pafs.copy_files(str(src), f"{bucket}/{key}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=filesystem(), chunk_size=_CHUNK)

    try:
        _call(url, "write", once)
    except OSError:
        _check_bucket(url, "write")
        raise


def write_bytes(url: str, data: bytes) -> None:
    bucket, key = split_s3(url)

    def once() -> None:
        with filesystem().open_output_stream(f"{bucket}/{key}") as out:
            out.write(data)

    _call(url, "write", once)


def read_bytes(url: str) -> bytes:
    bucket, key = split_s3(url)

    def once() -> bytes:
        with filesystem().open_input_stream(f"{bucket}/{key}") as src:
            return bytes(src.readall())

    return _call(url, "read", once)


def delete(url: str) -> None:
    """Delete one object (no error when it is not there)."""
    bucket, key = split_s3(url)
    from pyarrow import fs as pafs

    def once() -> None:
        if filesystem().get_file_info(f"{bucket}/{key}").type == pafs.FileType.File:
            filesystem().delete_file(f"{bucket}/{key}")

    _call(url, "write", once)


def delete_prefix(url: str) -> None:
    for info in list_objects(url):
        delete(join(url, info.key))


# ---------------------------------------------------------------------------------------------- inputs


def local_input(url: str, *, field_name: str) -> Path:
    """A local copy of the object at `url` (downloaded once, reused while unchanged)."""
    info = stat(url)
    if info is None:
        _check_bucket(url, "read")
        if list_objects(url):
            return local_input_dir(url, field_name=field_name)
        raise BadInput(f"no object at {url}; check the key (list it with `aws s3 ls {url}`)", field=field_name)
    _, name = parent_and_name(url)
    folder = scratch_for(url, "inputs")
    dest = folder / name
    stamp = folder / f".{name}.source.json"
    want = {"url": url, "size": info.size, "mtime_ns": info.mtime_ns}
    if dest.is_file() and stamp.is_file() and _read_json(stamp) == want and dest.stat().st_size == info.size:
        return dest
    started = time.perf_counter()
    download(url, dest, info.mtime_ns)
    stamp.write_text(json.dumps(want))
    log.info("downloaded %s (%.1f MB) in %.1f s", url, info.size / 1e6, time.perf_counter() - started)
    return dest


def local_input_dir(url: str, *, field_name: str) -> Path:
    """A local copy of every object under the prefix `url` (a TrainJob artifact folder)."""
    objects = [o for o in list_objects(url) if PARTIAL_MARK not in o.key]
    if not objects:
        if stat(url) is not None:
            raise BadInput(f"{url} is an object; this field names a folder (its prefix)", field=field_name)
        _check_bucket(url, "read")
        raise BadInput(f"nothing under {url}/; check the prefix (list it with `aws s3 ls {url}/`)",
                       field=field_name)
    folder = scratch_for(url, "inputs")
    for info in objects:
        dest = folder / info.key
        if dest.is_file() and dest.stat().st_size == info.size and dest.stat().st_mtime_ns == info.mtime_ns:
            continue
        download(join(url, info.key), dest, info.mtime_ns)
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
        """Upload the finished local file `name` to its final key."""
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
        """After success: drop the local scratch copy of a remote place."""
        if self.remote:
            shutil.rmtree(self.local_dir, ignore_errors=True)


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
    try:
        _check_bucket(place.remote, "write")
        list_objects(place.remote)
    except BadInput as err:
        raise BadInput(str(err), field=field_name) from err

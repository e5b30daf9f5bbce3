"""The object-store driver body shared by s3://, gs:// and az://: pyarrow's filesystems.

pyarrow (already in every image) has a native filesystem per cloud, each on
that cloud's own C++ SDK with its usual credential chain. A driver module
says how to build its filesystem from the environment and how to read its
errors; this module does the transfers once for all:

- stage in: ranged reads in parallel (`_DOWNLOAD_THREADS` x 8 MB) into a
  temporary file renamed when complete;
- publish: `copy_files` streams the file in C++; on S3 a multipart upload is
  completed, on GCS a resumable upload finalized, only after the last byte,
  so a killed process leaves nothing under the final key. A driver whose
  stream can show a partial object (`publish_through_temp`) writes a hidden
  temporary object in the same folder and copies it server-side to the final
  name, then deletes it (and any left by a killed publish of the same name);
- retries: transient failures back off and retry the whole (idempotent)
  transfer; permanent ones become `BadInput` naming the URL and the fix.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.storage.driver import ObjectInfo, ObjectStore

log = logging.getLogger("gpubatch.storage")

PARTIAL_MARK = ".partial"
_CHUNK = 8 << 20
_DOWNLOAD_THREADS = 8

T = TypeVar("T")


def env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else text


class ArrowStore(ObjectStore):
    """An object store on a pyarrow filesystem. Subclasses fill in the class attributes and
    `make_filesystem`; `explain` reads their error marks."""

    # Environment variables the filesystem is built from (a change builds a new one).
    settings_env: ClassVar[tuple[str, ...]] = ()
    # Substrings of the SDK's error text.
    bad_credentials_marks: ClassVar[tuple[str, ...]] = ()
    missing_root_marks: ClassVar[tuple[str, ...]] = ()
    denied_marks: ClassVar[tuple[str, ...]] = ()
    # For messages: which settings hold the credentials, the endpoint, and the rights to grant.
    credentials_hint: ClassVar[str] = ""
    endpoint_hint: ClassVar[str] = ""
    read_right: ClassVar[str] = ""
    write_right: ClassVar[str] = ""
    publish_through_temp: ClassVar[bool] = False
    upload_chunk: ClassVar[int] = _CHUNK  # bytes handed to the SDK's output stream per write

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str | None, ...], Any] = {}

    # --- the filesystem ----------------------------------------------------------------------------

    @abstractmethod
    def make_filesystem(self) -> Any:
        """The scheme's pyarrow filesystem, from its cloud's usual environment."""

    @abstractmethod
    def endpoint(self) -> str:
        """Where requests go, for messages."""

    def filesystem(self) -> Any:
        settings = tuple(os.environ.get(key) for key in self.settings_env)
        with self._lock:
            fs = self._cache.get(settings)
            if fs is None:
                try:
                    fs = self._cache[settings] = self.make_filesystem()
                except (ImportError, AttributeError, TypeError) as err:
                    # pyarrow before 20 lacks some of these filesystems or their options (the images pin 26)
                    import pyarrow

                    raise BadInput(f"{self.scheme}:// needs pyarrow's {self.scheme} filesystem, which pyarrow "
                                   f"{pyarrow.__version__} here lacks ({err}); pip install 'pyarrow>=20'") from err
            return fs

    def arrow_path(self, url: str) -> str:
        root, key = self.parse(url)
        return f"{root}/{key}" if key else root

    # --- errors ------------------------------------------------------------------------------------

    def explain(self, err: BaseException, url: str, action: str, probing: bool = False) -> BadInput | None:
        """A BadInput naming `url` and the fix when `err` is permanent; None for transient ones."""
        text = str(err)
        root, _ = self.parse(url)
        if any(mark in text for mark in self.bad_credentials_marks):
            return BadInput(f"cannot {action} {url}: the credentials are wrong ({first_line(text)}); check "
                            f"{self.credentials_hint} (in a pod: the Secret named by spec.storage.secretName)")
        if any(mark in text for mark in self.missing_root_marks):
            return self.missing_root(url, action)
        if any(mark in text for mark in self.denied_marks):
            if not probing:
                # A HEAD answer has no body, so "denied" may really be a wrong key: a listing says which.
                probed = self._probe_root(url)
                if probed is not None:
                    friendly = self.explain(probed, url, action, probing=True)
                    if friendly is not None and "access denied" not in str(friendly):
                        return friendly
            right = self.write_right if action == "write" else self.read_right
            return BadInput(f"cannot {action} {url}: access denied ({first_line(text)}); grant these credentials "
                            f"{right} on {self.root_word} {root!r} or use credentials that have it")
        return None

    def missing_root(self, url: str, action: str) -> BadInput:
        root, _ = self.parse(url)
        return BadInput(f"cannot {action} {url}: {self.root_word} {root!r} does not exist at {self.endpoint()}; "
                        f"create it or fix the {self.root_word} name (and {self.endpoint_hint} if it is on "
                        "another server)", path=url)

    def _probe_root(self, url: str) -> BaseException | None:
        from pyarrow import fs as pafs

        root, _ = self.parse(url)
        try:
            self.filesystem().get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True))
        except OSError as err:
            return err
        return None

    def is_permanent(self, err: BaseException) -> bool:
        text = str(err)
        marks = self.bad_credentials_marks + self.missing_root_marks + self.denied_marks
        return isinstance(err, BadInput) or any(mark in text for mark in marks)

    def call(self, url: str, action: str, fn: Callable[[], T], *, tries: int | None = None) -> T:
        """Run `fn`, retrying transient failures with backoff; permanent ones become BadInput."""
        tries = tries or env_int("GPUBATCH_STORAGE_TRIES", env_int("GPUBATCH_S3_UPLOAD_TRIES", 6))
        delay = 1.0
        for attempt in range(1, tries + 1):
            try:
                return fn()
            except BadInput as err:
                if url in str(err):
                    raise
                raise BadInput(f"cannot {action} {url}: {err}") from err  # a setting's error names the URL too
            except FileNotFoundError as err:
                self.check_root(url, action)
                raise BadInput(f"no object at {url}; check the key (list it with `{self.list_command(url)}`)",
                               path=url) from err
            except (OSError, ValueError) as err:
                friendly = self.explain(err, url, action)
                if friendly is not None:
                    raise friendly from err
                if attempt == tries:
                    raise OSError(f"cannot {action} {url} after {tries} tries: {first_line(str(err))}; check "
                                  f"that the endpoint ({self.endpoint_hint}: {self.endpoint()}) is reachable") from err
                log.warning("%s %s failed (%s); retrying in %.0f s (try %d of %d)", action, url,
                            first_line(str(err)), delay, attempt, tries)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def check_root(self, url: str, action: str) -> None:
        from pyarrow import fs as pafs

        root, _ = self.parse(url)
        info = self.call(url, action, lambda: self.filesystem().get_file_info(root))
        if info.type == pafs.FileType.NotFound:
            raise self.missing_root(url, action)

    # --- objects -----------------------------------------------------------------------------------

    def stat(self, url: str) -> ObjectInfo | None:
        from pyarrow import fs as pafs

        _, key = self.parse(url)
        info = self.call(url, "read", lambda: self.filesystem().get_file_info(self.arrow_path(url)))
        if info.type != pafs.FileType.File:
            return None
        return ObjectInfo(key, int(info.size or 0), int(info.mtime_ns or 0))

    def list(self, prefix_url: str) -> list[ObjectInfo]:
        from pyarrow import fs as pafs

        base = self.arrow_path(prefix_url).rstrip("/")
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self.call(prefix_url, "list", lambda: self.filesystem().get_file_info(selector))
        return [ObjectInfo(info.path[len(base) + 1:], int(info.size or 0), int(info.mtime_ns or 0))
                for info in infos if info.type == pafs.FileType.File]

    def download(self, url: str, dest: Path, mtime_ns: int | None = None) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}{PARTIAL_MARK}-{os.getpid()}")

        def once() -> None:
            source = self.filesystem().open_input_file(self.arrow_path(url))
            size = source.size()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, size)

                def part(offset: int) -> None:
                    os.pwrite(fd, source.read_at(min(_CHUNK, size - offset), offset), offset)

                # Ranged reads in parallel: about twice one stream's rate (bench/storage.py).
                with ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
                    list(pool.map(part, range(0, size, _CHUNK)))
            finally:
                os.close(fd)
                source.close()

        try:
            self.call(url, "read", once)
            if mtime_ns:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def upload(self, src: Path, url: str) -> None:
        from pyarrow import fs as pafs

        def send(target: str) -> None:
            pafs.copy_files(str(src), target, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.filesystem(), chunk_size=self.upload_chunk)

        try:
            self._publish(url, send)
        except OSError:
            self.check_root(url, "write")
            raise

    def write_bytes(self, url: str, data: bytes) -> None:
        def send(target: str) -> None:
            with self.filesystem().open_output_stream(target) as out:
                out.write(data)

        self._publish(url, send)

    def _publish(self, url: str, send: Callable[[str], None]) -> None:
        final = self.arrow_path(url)
        if not self.publish_through_temp:
            self.call(url, "write", lambda: send(final))
            return
        head, _, name = final.rpartition("/")
        temp = f"{head}/.{name}{PARTIAL_MARK}-{uuid.uuid4().hex[:12]}"

        def once() -> None:
            try:
                send(temp)
                # A server-side copy: the final blob is created whole from the committed temporary one.
                self.filesystem().copy_file(temp, final)
            finally:
                self._delete_quietly(temp)

        self.call(url, "write", once)
        self._delete_stale_temps(head, name)

    def _delete_stale_temps(self, head: str, name: str) -> None:
        """Temporary objects of this name left by killed publishes (the final one is now whole)."""
        from pyarrow import fs as pafs

        mark = f"{head}/.{name}{PARTIAL_MARK}-"
        try:
            infos = self.filesystem().get_file_info(pafs.FileSelector(head, recursive=False, allow_not_found=True))
        except OSError as err:
            log.debug("cannot list %s for stale temporary objects: %s", head, err)
            return
        for info in infos:
            if info.type == pafs.FileType.File and info.path.startswith(mark):
                self._delete_quietly(info.path)

    def tidy(self, prefix_url: str) -> None:
        """Delete temporary objects `.NAME.partial-<hex>` whose NAME is published beside them: a publish
        killed between the server-side copy and the delete (or before the copy of a name published since)."""
        if not self.publish_through_temp:
            return
        from pyarrow import fs as pafs

        base = self.arrow_path(prefix_url).rstrip("/")
        try:
            infos = self.filesystem().get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as err:
            log.debug("cannot list %s to tidy: %s", base, err)
            return
        files = {info.path for info in infos if info.type == pafs.FileType.File}
        for path in files:
            head, _, leaf = path.rpartition("/")
            final, sep, suffix = leaf[1:].rpartition(f"{PARTIAL_MARK}-")
            if leaf.startswith(".") and sep and len(suffix) == 12 and f"{head}/{final}" in files:
                self._delete_quietly(path)

    def _delete_quietly(self, path: str) -> None:
        try:
            self.filesystem().delete_file(path)
        except OSError:
            pass

    def read_bytes(self, url: str) -> bytes:
        def once() -> bytes:
            with self.filesystem().open_input_stream(self.arrow_path(url)) as src:
                return bytes(src.readall())

        return self.call(url, "read", once)

    def delete(self, url: str) -> None:
        from pyarrow import fs as pafs

        def once() -> None:
            path = self.arrow_path(url)
            if self.filesystem().get_file_info(path).type == pafs.FileType.File:
                self.filesystem().delete_file(path)

        self.call(url, "write", once)

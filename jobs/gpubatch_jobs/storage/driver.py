"""The storage driver interface and the registry of schemes: the one place that knows which exist.

A path is either local (no scheme) or `SCHEME://ROOT/KEY`, and each scheme is
one driver: a small class that parses its URLs and, for object stores, stats,
lists, stages in (ranged parallel reads), publishes atomically and deletes,
with its own credentials, retries and error messages. Everything else
(`RunContext`, the engines, the CLI) asks `driver_for(url)` and never tests
a scheme itself. Adding a scheme is one module with a driver class plus one
line in `_REGISTRY`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gpubatch_jobs.errors import BadInput

# scheme -> "module:Class", imported on first use (pyarrow is loaded only when a URL needs it).
_REGISTRY: dict[str, str] = {
    "pvc": "gpubatch_jobs.storage.pvc:PvcDriver",
    "s3": "gpubatch_jobs.storage.s3:S3Driver",
    "gs": "gpubatch_jobs.storage.gcs:GcsDriver",
    "az": "gpubatch_jobs.storage.azure:AzureDriver",
}
_loaded: dict[str, Driver] = {}


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the listed prefix (the whole key for `stat`)
    size: int
    mtime_ns: int


class Driver(ABC):
    """One URL scheme. `remote` drivers are `ObjectStore`s; a local one (pvc://) is resolved by RunContext."""

    scheme: ClassVar[str]
    remote: ClassVar[bool] = True
    root_word: ClassVar[str] = "bucket"  # what the URL's first segment names, for messages
    form: ClassVar[str] = ""  # the URL's shape, for messages: "s3://BUCKET/KEY"

    @property
    def prefix(self) -> str:
        return f"{self.scheme}://"

    def parse(self, url: str) -> tuple[str, str]:
        """(root, key) of `SCHEME://root/key`: the bucket, container or claim, and the key without
        a leading or trailing slash."""
        root, _, key = url[len(self.prefix):].partition("/")
        return root, key.strip("/")

    def url(self, root: str, key: str = "") -> str:
        return f"{self.prefix}{root}/{key}" if key else f"{self.prefix}{root}"


class ObjectStore(Driver):
    """A remote object store: what the engines' inputs and outputs need of it.

    Every method names the URL it was given in its errors; permanent failures
    (missing bucket, refused credentials, missing object) are `BadInput`."""

    @abstractmethod
    def stat(self, url: str) -> ObjectInfo | None:
        """The object's size and time, or None when there is none."""

    @abstractmethod
    def list(self, prefix_url: str) -> list[ObjectInfo]:
        """Every object under the prefix (recursively), keys relative to it; [] when none."""

    @abstractmethod
    def download(self, url: str, dest: Path, mtime_ns: int | None = None) -> None:
        """Copy the object to `dest` (a temporary name renamed when complete), keeping its time."""

    @abstractmethod
    def upload(self, src: Path, url: str) -> None:
        """Publish the complete local file `src` as `url`: the object appears whole or not at all."""

    @abstractmethod
    def read_bytes(self, url: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, url: str, data: bytes) -> None:
        """Publish `data` as `url` (whole or not at all)."""

    @abstractmethod
    def delete(self, url: str) -> None:
        """Delete one object; no error when it is not there."""

    @abstractmethod
    def check_root(self, url: str, action: str) -> None:
        """BadInput when the bucket/container of `url` is missing or these credentials are refused."""

    @abstractmethod
    def list_command(self, url: str) -> str:
        """The shell command that lists `url`, for messages."""

    def tidy(self, prefix_url: str) -> None:
        """After a job's success: remove what killed publishes under the prefix left behind (a driver
        that publishes through temporary objects); nothing by default."""


def schemes() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def url_forms() -> str:
    """Every scheme's URL shape, for messages: `pvc://CLAIM/sub/path, s3://BUCKET/KEY, ...`."""
    forms = [driver.form for driver in (driver_for(f"{scheme}://") for scheme in _REGISTRY) if driver is not None]
    return ", ".join(forms[:-1]) + " and " + forms[-1] if len(forms) > 1 else "".join(forms)


def scheme_of(path: str) -> str | None:
    head, sep, _ = str(path).partition("://")
    return head if sep and head in _REGISTRY else None


def driver_for(path: str) -> Driver | None:
    """The driver of `path`'s scheme; None for a local path."""
    scheme = scheme_of(path)
    if scheme is None:
        return None
    driver = _loaded.get(scheme)
    if driver is None:
        module, _, name = _REGISTRY[scheme].partition(":")
        driver = _loaded[scheme] = getattr(importlib.import_module(module), name)()
    return driver


def object_store(path: str) -> ObjectStore | None:
    """The object store of `path`, or None for a local or pvc:// path."""
    driver = driver_for(path)
    return driver if isinstance(driver, ObjectStore) else None


def store_of(url: str) -> ObjectStore:
    """The object store of `url`; BadInput naming the URL when it is not an object-store URL."""
    store = object_store(url)
    if store is None:
        remote = [driver.form for driver in (driver_for(f"{scheme}://") for scheme in _REGISTRY)
                  if driver is not None and driver.remote]
        raise BadInput(f"{url} is not an object-storage URL ({', '.join(remote)})", path=url)
    return store

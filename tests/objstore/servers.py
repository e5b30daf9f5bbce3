"""Real object-store servers for tests, one per scheme, behind one small interface.

- s3://  SeaweedFS (tests/s3/server.py; authentication on);
- gs://  fake-gcs-server, built from its pinned Go module by fake-gcs-server.sh;
- az://  Azurite (its blob service), installed from the npm registry by azurite.sh.

Each runs as a process of its own on a free port (listening on 0.0.0.0, so
pods on the test node reach it at the node's host address) with a temporary
data folder; `stop()` kills it and removes the folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.s3.server import ADMIN, SeaweedS3, build_weed, stop_group

HERE = Path(__file__).resolve().parent
SCHEMES = ("s3", "gs", "az")

# Azurite's well-known development account (public, in Azure's own documentation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _build(script: str, what: str) -> Path:
    out = subprocess.run(["bash", str(HERE / script)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"building {what} failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class ObjectServer(ABC):
    """What the scheme-parametrized tests need of a server."""

    scheme: str
    wrong_credentials_hint: str  # the setting a wrong-credentials message must name

    @abstractmethod
    def env(self, host: str = "127.0.0.1") -> dict[str, str]:
        """The cloud's usual variables for this server, as reached from `host`."""

    @abstractmethod
    def wrong_credentials_env(self, tmp: Path) -> dict[str, str]:
        """`env()` with credentials this server (or the driver) refuses."""

    @abstractmethod
    def filesystem(self) -> Any:
        """An admin pyarrow filesystem on this server (bypassing the code under test)."""

    @abstractmethod
    def create_bucket(self, name: str) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def log_tail(self) -> str: ...

    def url(self, bucket: str, key: str = "") -> str:
        return f"{self.scheme}://{bucket}/{key}" if key else f"{self.scheme}://{bucket}"

    def keys(self, bucket: str) -> dict[str, int]:
        """{key: size} of every object in the bucket."""
        from pyarrow import fs as pafs

        infos = self.filesystem().get_file_info(pafs.FileSelector(bucket, recursive=True, allow_not_found=True))
        return {i.path[len(bucket) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}

    def put(self, bucket: str, key: str, data: bytes) -> None:
        with self.filesystem().open_output_stream(f"{bucket}/{key}") as out:
            out.write(data)

    def get(self, bucket: str, key: str) -> bytes:
        with self.filesystem().open_input_stream(f"{bucket}/{key}") as src:
            return bytes(src.read())


class S3Server(ObjectServer):
    scheme = "s3"
    wrong_credentials_hint = "AWS_SECRET_ACCESS_KEY"

    def __init__(self) -> None:
        self.seaweed = SeaweedS3(build_weed())
        self.seaweed.start()

    def env(self, host: str = "127.0.0.1") -> dict[str, str]:
        return self.seaweed.env(endpoint=f"http://{host}:{self.seaweed.port}")

    def wrong_credentials_env(self, tmp: Path) -> dict[str, str]:
        return {**self.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}

    def filesystem(self) -> Any:
        return self.seaweed.filesystem(ADMIN)

    def create_bucket(self, name: str) -> None:
        self.seaweed.create_bucket(name)

    def stop(self) -> None:
        self.seaweed.stop()

    def log_tail(self) -> str:
        return self.seaweed.log_tail()


class _Process:
    """A server process in its own session, logging into its temporary folder."""

    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str]) -> None:
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.root)

    def wait_http(self, path: str, timeout: float = 60.0) -> None:
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError as err:
                last = str(err)
            time.sleep(0.3)
        raise RuntimeError(f"server not ready in {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


class _ProcessServer(ObjectServer):
    """A test server run as a process of ours (`self.process`), buckets made through its filesystem."""

    process: _Process

    def create_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def stop(self) -> None:
        self.process.stop()

    def log_tail(self) -> str:
        return self.process.log_tail()


class FakeGcsServer(_ProcessServer):
    """fake-gcs-server on a free port; `public_host` is the address its upload URLs name (pods
    must be able to reach it)."""

    scheme = "gs"
    wrong_credentials_hint = "GOOGLE_APPLICATION_CREDENTIALS"

    def __init__(self, public_host: str = "127.0.0.1") -> None:
        binary = _build("fake-gcs-server.sh", "fake-gcs-server")
        self.process = _Process("gpubatch-gcs-")
        self.public_host = public_host
        port = self.process.port
        self.process.spawn([str(binary), "-scheme", "http", "-host", "0.0.0.0", "-port", str(port),
                            "-backend", "filesystem", "-filesystem-root", str(self.process.root / "data"),
                            "-external-url", f"http://{public_host}:{port}", "-public-host",
                            f"{public_host}:{port}", "-log-level", "warn"])
        self.process.wait_http("/storage/v1/b")

    def env(self, host: str = "127.0.0.1") -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": f"http://{host}:{self.process.port}"}

    def wrong_credentials_env(self, tmp: Path) -> dict[str, str]:
        # The emulator checks no credentials, so "wrong" is what a client can see: a key file
        # that is not one (the driver refuses it before any request, naming the variable).
        (tmp / "not-a-key.json").write_text('{"client_email": "x@example.com"}')
        return {**self.env(), "GOOGLE_APPLICATION_CREDENTIALS": str(tmp / "not-a-key.json")}

    def filesystem(self) -> Any:
        from pyarrow import fs as pafs

        return pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=f"127.0.0.1:{self.process.port}",
                                  project_id="gpubatch-tests")


class AzuriteServer(_ProcessServer):
    """Azurite's blob service on a free port, with its development account (shared-key checked)."""

    scheme = "az"
    wrong_credentials_hint = "AZURE_STORAGE_CONNECTION_STRING"

    def __init__(self) -> None:
        main = _build("azurite.sh", "Azurite")
        self.process = _Process("gpubatch-azurite-")
        self.process.spawn(["node", str(main), "--blobHost", "0.0.0.0", "--blobPort", str(self.process.port),
                            "--location", str(self.process.root / "data"), "--skipApiVersionCheck",
                            "--disableProductStyleUrl", "--silent"])
        self.process.wait_http("/")

    def connection_string(self, host: str = "127.0.0.1", key: str = AZURITE_KEY) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
                f"BlobEndpoint=http://{host}:{self.process.port}/{AZURITE_ACCOUNT};")

    def env(self, host: str = "127.0.0.1") -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string(host)}

    def wrong_credentials_env(self, tmp: Path) -> dict[str, str]:
        wrong = "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudCdzLTAxMjM0NTY3ODk="
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string(key=wrong)}

    def filesystem(self) -> Any:
        from pyarrow import fs as pafs

        authority = f"127.0.0.1:{self.process.port}"
        return pafs.AzureFileSystem(AZURITE_ACCOUNT, account_key=AZURITE_KEY, blob_storage_authority=authority,
                                    dfs_storage_authority=authority, blob_storage_scheme="http",
                                    dfs_storage_scheme="http")


STARTERS = {"s3": S3Server, "gs": FakeGcsServer, "az": AzuriteServer}


@contextmanager
def running(scheme: str, **kwargs: Any) -> Iterator[ObjectServer]:
    """The scheme's server built if needed, started, and stopped (with its data) afterwards."""
    server = STARTERS[scheme](**kwargs)
    try:
        yield server
    finally:
        server.stop()

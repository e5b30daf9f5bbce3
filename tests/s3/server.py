"""A real S3 server for tests: SeaweedFS (`weed server -s3`) on free ports in a temp folder.

Built from its pinned Go module by tests/s3/seaweedfs.sh (cached under
~/.cache/gpubatch/seaweedfs-<version>). Authentication is on (an S3 identity
config), so a wrong secret is really refused: `admin` may do anything,
`reader` may only read and list. Every component listens on 0.0.0.0, so pods
on the test node reach the S3 port at the node's host address (10.87.0.1).
`restart()` stops and starts the server on the same folder and ports (a
dropped connection for clients in flight); `stop()` kills it and removes the
folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "seaweedfs.sh"
REGION = "us-east-1"
ADMIN = ("gpubatch-admin", "gpubatch-admin-secret-0123456789")
READER = ("gpubatch-reader", "gpubatch-reader-secret-0123456789")


def build_weed() -> Path:
    """The weed binary (built from the pinned module when missing)."""
    out = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"building SeaweedFS failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a server started in its own session: SIGTERM to its group, SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _free_port() -> int:
    """A port p with p and p + 10000 free (SeaweedFS puts each gRPC port at port + 10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("0.0.0.0", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


@dataclass
class SeaweedS3:
    weed: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpubatch-s3-")))
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, key: tuple[str, str] = ADMIN, endpoint: str | None = None) -> dict[str, str]:
        """The standard AWS variables for this server and identity."""
        return {"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1],
                "AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_REGION": REGION}

    def start(self) -> None:
        if not self.ports:
            taken: set[int] = set()
            for name in ("master", "volume", "filer", "s3"):
                port = _free_port()
                while port in taken or port + 10000 in taken:
                    port = _free_port()
                taken.update({port, port + 10000})
                self.ports[name] = port
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]},
        ]}))
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        # Each bucket is a collection; grow one volume at a time (default 7), so that many test
        # buckets fit in -volume.max volumes (sparse files: disk use is what is stored).
        (self.root / "master.toml").write_text(
            "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n")
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [str(self.weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=0.0.0.0",
             f"-master.port={self.ports['master']}", f"-volume.port={self.ports['volume']}",
             f"-filer.port={self.ports['filer']}", "-s3", f"-s3.port={self.ports['s3']}",
             f"-s3.config={config}", "-master.volumeSizeLimitMB=1024", "-volume.max=200",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0", f"-s3.port.grpc={self.ports['s3'] + 10000}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,  # reads ./master.toml
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # An unauthenticated list is refused (403) once the S3 gateway and the filer answer.
                urllib.request.urlopen(f"{self.endpoint}/", timeout=2)
            except urllib.error.HTTPError as err:
                if err.code == 403 and self._writable():
                    return
                last = f"HTTP {err.code}"
            except OSError as err:
                last = str(err)
            time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS S3 not ready in {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def _writable(self) -> bool:
        """True once a bucket can be created and an object written (volumes allocated)."""
        try:
            fs = self.filesystem()
            fs.create_dir("gpubatch-ready-check")
            with fs.open_output_stream("gpubatch-ready-check/probe") as out:
                out.write(b"ok")
            fs.delete_dir("gpubatch-ready-check")
            return True
        except OSError:
            return False

    def filesystem(self, key: tuple[str, str] = ADMIN):  # type: ignore[no-untyped-def]
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(access_key=key[0], secret_key=key[1], endpoint_override=f"127.0.0.1:{self.port}",
                                 scheme="http", region=REGION, allow_bucket_creation=True,
                                 allow_bucket_deletion=True)

    def create_bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return f"s3://{name}"

    def keys(self, bucket: str) -> dict[str, int]:
        """{key: size} of every object in the bucket."""
        from pyarrow import fs as pafs

        infos = self.filesystem().get_file_info(pafs.FileSelector(bucket, recursive=True, allow_not_found=True))
        return {i.path[len(bucket) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}

    def stored_bytes(self) -> int:
        """Bytes the volume servers have written to disk (grows while an upload is in flight)."""
        total = 0
        for path in (self.root / "data").rglob("*.dat"):
            try:
                total += path.stat().st_blocks * 512
            except FileNotFoundError:
                pass
        return total

    def kill(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.root / "weed.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextlib.contextmanager
def running_server() -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server built if needed, started, and stopped (with its folder) afterwards."""
    server = SeaweedS3(build_weed())
    try:
        server.start()
        yield server
    finally:
        server.stop()

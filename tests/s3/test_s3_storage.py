"""gpubatch_jobs.storage against a real S3 server (SeaweedFS): errors, retries, no partial objects."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpubatch_jobs import storage
from gpubatch_jobs.errors import BadInput
from tests.s3.server import READER, SeaweedS3

pytestmark = pytest.mark.slow


def _big_file(path: Path, mb: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for i in range(mb):
            chunk = i.to_bytes(8, "little") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_round_trip_list_and_local_copy(s3_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    want = _big_file(src, 12)  # > one multipart part
    url = f"s3://{bucket}/in/a.bin"
    storage.upload(src, url)
    assert storage.stat(url) is not None and storage.stat(url).size == 12 << 20
    assert [o.key for o in storage.list_objects(f"s3://{bucket}/in")] == ["a.bin"]
    local = storage.local_input(url, field_name="spec.input.path")
    assert _sha(local) == want
    # reused while unchanged: no second download
    mtime = local.stat().st_mtime_ns
    assert storage.local_input(url, field_name="spec.input.path") == local and local.stat().st_mtime_ns == mtime


def test_wrong_secret_missing_bucket_and_denied_are_bad_input(
        s3_server: SeaweedS3, s3_env: dict[str, str], bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "x.txt"
    src.write_text("x")
    storage.upload(src, f"s3://{bucket}/x.txt")

    with pytest.raises(BadInput) as err:
        storage.local_input(f"s3://no-such-bucket-{bucket}/x.txt", field_name="spec.input.path")
    assert f"no-such-bucket-{bucket}" in str(err.value) and "does not exist" in str(err.value)

    with pytest.raises(BadInput) as err:
        storage.local_input(f"s3://{bucket}/missing.txt", field_name="spec.input.path")
    assert f"s3://{bucket}/missing.txt" in str(err.value)

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(BadInput) as err:
        storage.local_input(f"s3://{bucket}/x.txt", field_name="spec.input.path")
    assert "AWS_SECRET_ACCESS_KEY" in str(err.value) and f"s3://{bucket}/x.txt" in str(err.value)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    assert storage.read_bytes(f"s3://{bucket}/x.txt") == b"x"  # the reader may read
    with pytest.raises(BadInput) as err:
        storage.upload(src, f"s3://{bucket}/y.txt")
    assert "access denied" in str(err.value) and f"s3://{bucket}/y.txt" in str(err.value)
    assert "y.txt" not in s3_server.keys(bucket)


def test_server_restart_mid_upload_is_retried_and_never_partial(
        s3_server: SeaweedS3, s3_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    want = _big_file(src, 384)
    url = f"s3://{bucket}/out/big.bin"
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            storage.upload(src, url)
        except BaseException as err:  # noqa: BLE001 (reported by the test)
            errors.append(err)

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "the upload finished before the restart; make the file bigger"
    assert "out/big.bin" not in s3_server.keys(bucket), "an object appeared before its upload completed"
    s3_server.restart(down_s=2.0)  # connections drop; the server is away for 2 s
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert not errors, f"upload failed despite retries: {errors}"
    assert s3_server.keys(bucket) == {"out/big.bin": 384 << 20}
    back = tmp_path / "back.bin"
    storage.download(url, back)
    assert _sha(back) == want


def test_killed_upload_leaves_no_object(s3_server: SeaweedS3, s3_env: dict[str, str], bucket: str,
                                       tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    _big_file(src, 384)
    url = f"s3://{bucket}/out/big.bin"
    code = f"from gpubatch_jobs import storage; from pathlib import Path; storage.upload(Path({str(src)!r}), {url!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **s3_env})
    time.sleep(2.5)
    assert proc.poll() is None, "the upload finished before it could be killed; make the file bigger"
    proc.kill()
    proc.wait(timeout=30)
    assert s3_server.keys(bucket) == {}, "a killed upload left an object"

"""s3:// only, on a real S3 server (SeaweedFS): a reader identity denied writes, and a server restart
mid-upload retried. What every scheme shares (round trip, errors, killed uploads) is tests/objstore/."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gpubatch_jobs import storage
from gpubatch_jobs.errors import BadInput
from tests.objstore.test_storage import big_file, sha
from tests.s3.server import READER, SeaweedS3

pytestmark = pytest.mark.slow


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
    want = big_file(src, 384)
    url = f"s3://{bucket}/out/big.bin"
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            storage.upload(src, url)
        except BaseException as err:  # noqa: BLE001 (reported by the test)
            errors.append(err)

    thread = threading.Thread(target=upload)
    before = s3_server.stored_bytes()
    thread.start()
    # Restart once 32 MiB of it are on the server's disk: mid-upload however fast the machine is
    # (a fixed sleep restarted after the upload had ended on a fast run, before it began on a slow one).
    deadline = time.monotonic() + 300
    while thread.is_alive() and s3_server.stored_bytes() - before < 32 << 20 and time.monotonic() < deadline:
        time.sleep(0.002)
    sent = s3_server.stored_bytes() - before
    assert thread.is_alive() and sent < 384 << 20, f"the upload ended before the restart ({sent} bytes stored)"
    s3_server.restart(down_s=2.0)  # connections drop; the server is away for 2 s
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert not errors, f"upload failed despite retries: {errors}"
    assert s3_server.keys(bucket) == {"out/big.bin": 384 << 20}
    back = tmp_path / "back.bin"
    storage.download(url, back)
    assert sha(back) == want

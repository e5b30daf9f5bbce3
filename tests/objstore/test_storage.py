"""gpubatch_jobs.storage against a real server of each scheme: round trip, clear errors, and no
partial object under a final name after a killed upload."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpubatch_jobs import storage
from gpubatch_jobs.errors import BadInput
from tests.objstore.servers import ObjectServer

pytestmark = pytest.mark.slow


def big_file(path: Path, mb: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for i in range(mb):
            chunk = i.to_bytes(8, "little") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_round_trip_list_delete_and_local_copy(store: ObjectServer, store_env: dict[str, str], bucket: str,
                                               tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    want = big_file(src, 20)  # several 8 MB parts and ranged reads
    url = store.url(bucket, "in/a.bin")
    storage.upload(src, url)
    info = storage.stat(url)
    assert info is not None and info.size == 20 << 20
    assert store.keys(bucket) == {"in/a.bin": 20 << 20}  # nothing else (no temporary object left)
    assert [o.key for o in storage.list_objects(store.url(bucket, "in"))] == ["a.bin"]
    local = storage.local_input(url, field_name="spec.input.path")
    assert sha(local) == want
    # reused while unchanged: no second download
    mtime = local.stat().st_mtime_ns
    assert storage.local_input(url, field_name="spec.input.path") == local and local.stat().st_mtime_ns == mtime
    # small objects (logs, checkpoint commit points) and deletes
    storage.write_bytes(store.url(bucket, "ckpt/latest.json"), b'{"epoch": 2}')
    assert storage.read_bytes(store.url(bucket, "ckpt/latest.json")) == b'{"epoch": 2}'
    storage.write_bytes(store.url(bucket, "ckpt/latest.json"), b'{"epoch": 3}')  # replaced whole
    assert store.get(bucket, "ckpt/latest.json") == b'{"epoch": 3}'
    storage.delete_prefix(store.url(bucket, "ckpt"))
    storage.delete(store.url(bucket, "ckpt/not-there"))  # no error
    assert set(store.keys(bucket)) == {"in/a.bin"}
    # a prefix is staged as a folder
    folder = storage.local_input_dir(store.url(bucket, "in"), field_name="spec.model")
    assert sha(folder / "a.bin") == want


def test_missing_bucket_missing_object_and_wrong_credentials_are_bad_input(
        store: ObjectServer, store_env: dict[str, str], bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(bucket, "x.txt", b"x")

    missing = store.url(f"no-such-{bucket}", "x.txt")
    with pytest.raises(BadInput) as err:
        storage.local_input(missing, field_name="spec.input.path")
    assert missing in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(BadInput) as err:
        storage.check_reachable(storage.output_folder(store.url(f"no-such-{bucket}", "out")), "spec.output.path")
    assert str(err.value).startswith("spec.output.path: ") and "create it" in str(err.value)

    with pytest.raises(BadInput) as err:
        storage.local_input(store.url(bucket, "missing.txt"), field_name="spec.input.path")
    assert "spec.input.path" in str(err.value) and store.url(bucket, "missing.txt") in str(err.value)

    for key, value in store.wrong_credentials_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    for action in (lambda: storage.local_input(store.url(bucket, "x.txt"), field_name="spec.input.path"),
                   lambda: storage.write_bytes(store.url(bucket, "y.txt"), b"y")):
        with pytest.raises(BadInput) as err:
            action()
        assert store.wrong_credentials_hint in str(err.value) and store.url(bucket) in str(err.value)
        assert "spec.storage.secretName" in str(err.value)
    assert set(store.keys(bucket)) == {"x.txt"}


def test_killed_upload_leaves_nothing_under_the_final_name(store: ObjectServer, store_env: dict[str, str],
                                                           bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    big_file(src, 384)
    url = store.url(bucket, "out/big.bin")
    code = f"from gpubatch_jobs import storage; from pathlib import Path; storage.upload(Path({str(src)!r}), {url!r})"
    baseline = _data_bytes(store)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **store_env})
    # Kill once the upload is under way: 16 MB more on the server's disk (parts, a resumable
    # session's chunks, staged blocks), or 4 s (a server may hold an unfinished upload in memory).
    started = time.monotonic()
    while _data_bytes(store) - baseline < (16 << 20) and time.monotonic() - started < 4.0:
        assert proc.poll() is None, "the upload finished before it could be killed; make the file bigger"
        time.sleep(0.05)
    assert proc.poll() is None, "the upload finished before it could be killed; make the file bigger"
    proc.kill()
    proc.wait(timeout=30)
    keys = store.keys(bucket)
    assert "out/big.bin" not in keys, "a killed upload left an object under its final name"
    # what may remain is a hidden temporary object (az://), which readers skip
    assert all(storage.PARTIAL_MARK in key for key in keys), keys


def _data_bytes(store: ObjectServer) -> int:
    """Bytes in the server's data folder."""
    holder = getattr(store, "process", None) or getattr(store, "seaweed", None)
    root = Path(holder.root) if holder is not None else None
    if root is None:
        return 0
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())

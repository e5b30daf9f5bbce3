"""Object-storage benchmark, per scheme: MB/s through each object store on loopback against local
disk, and jobs on object-store URLs vs local paths.

    .venv/bin/python bench/storage.py                  # 1 GB datasets, s3 gs az (long on 2 busy cores)
    .venv/bin/python bench/storage.py --mb 256 --skip-jobs --schemes gs,az

For each scheme it starts the test server of tests/objstore/servers.py
(SeaweedFS for s3://, fake-gcs-server for gs://, Azurite for az://) on
loopback in a temp folder, then prints:

1. Libraries, raw objects: upload (publish) and download (stage-in) MB/s of
   the same file through the gpubatch driver (pyarrow's filesystem of that
   cloud), s3fs (s3:// only) and obstore (each where installed), with the
   local-disk copy as the baseline. This chose the library.
2. Datasets (HDF5 float32 matrix, Parquet table of float64 columns, ~1 GB
   each) through gpubatch_jobs.storage: write = build on local scratch + upload,
   read = download + read every value; beside writing and reading the same file
   on local disk (fsync'd; the read may come from the page cache, which only
   flatters the local figure).
3. Jobs: a RenderJob and a PredictJob with object-store input and output
   against the same job on local paths (end-to-end throughput, and the ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "jobs")]

from tests.objstore.servers import SCHEMES, AzuriteServer, FakeGcsServer, ObjectServer, running  # noqa: E402


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds if seconds > 0 else float("inf")


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _fsync_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def _read_all(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


# ---------------------------------------------------------------------------------------- libraries


def lib_driver(server: ObjectServer, bucket: str) -> tuple[Any, Any]:
    from gpubatch_jobs import storage

    def put(src: Path, key: str) -> None:
        storage.upload(src, server.url(bucket, key))

    def get(key: str, dst: Path) -> None:
        storage.download(server.url(bucket, key), dst)

    return put, get


def lib_s3fs(server: ObjectServer, bucket: str) -> tuple[Any, Any]:
    import s3fs

    if server.scheme != "s3":
        raise ImportError("s3:// only")
    env = server.env()
    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=env["AWS_ENDPOINT_URL"], client_kwargs={"region_name": "us-east-1"})

    def put(src: Path, k: str) -> None:
        fs.put_file(str(src), f"{bucket}/{k}")

    def get(k: str, dst: Path) -> None:
        fs.get_file(f"{bucket}/{k}", str(dst))

    return put, get


def _obstore_store(server: ObjectServer, bucket: str) -> Any:
    from obstore.store import AzureStore, GCSStore, S3Store

    env = server.env()
    if server.scheme == "s3":
        return S3Store(bucket, endpoint=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                       secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                       client_options={"allow_http": True})
    if isinstance(server, FakeGcsServer):
        # obstore 0.12 has no unsigned GCS requests: it asks the metadata server for a token, which
        # the emulator's loopback setup lacks, so this row reports the error.
        return GCSStore(bucket, config={"google_base_url": env["STORAGE_EMULATOR_HOST"]},
                        client_options={"allow_http": True})
    assert isinstance(server, AzuriteServer)
    return AzureStore(bucket, config={"account_name": "devstoreaccount1",
                                      "account_key": env["AZURE_STORAGE_CONNECTION_STRING"]
                                      .split("AccountKey=")[1].split(";")[0],
                                      "endpoint": f"http://127.0.0.1:{server.process.port}/devstoreaccount1"},
                      client_options={"allow_http": True})


def lib_obstore(server: ObjectServer, bucket: str) -> tuple[Any, Any]:
    import obstore

    store = _obstore_store(server, bucket)

    def put(src: Path, k: str) -> None:
        obstore.put(store, k, src)

    def get(k: str, dst: Path) -> None:
        with open(dst, "wb") as out:
            for chunk in obstore.get(store, k).stream(min_chunk_size=8 << 20):
                out.write(chunk)

    return put, get


LIBRARIES = {"gpubatch driver (pyarrow)": lib_driver, "s3fs": lib_s3fs, "obstore": lib_obstore}


def bench_libraries(server: ObjectServer, bucket: str, work: Path, mb: int, repeat: int) -> None:
    src = work / "blob.bin"
    with open(src, "wb") as out:
        block = np.random.default_rng(0).bytes(8 << 20)
        for _ in range(max(1, mb // 8)):
            out.write(block)
    size = src.stat().st_size
    print(f"\n1. {server.scheme}:// raw objects: {size / 1e6:.0f} MB file, best of {repeat} "
          "(MB/s; ratio to the gpubatch driver; to local disk in [])")
    local_w = min(_timed(lambda: _fsync_copy(src, work / "copy.bin")) for _ in range(repeat))
    (work / "copy.bin").unlink()
    print(f"  {'local disk copy (fsync)':28s} write {_mbps(size, local_w):8.0f}")
    base: dict[str, float] = {}
    for name, make in LIBRARIES.items():
        dst = work / "back.bin"
        key = f"lib/{name.split()[0]}.bin"
        try:
            put, get = make(server, bucket)
            up = min(_timed(lambda: put(src, key)) for _ in range(repeat))  # noqa: B023 (called at once)
            down = min(_timed(lambda: get(key, dst)) for _ in range(repeat))  # noqa: B023
        except Exception as err:  # noqa: BLE001 (a library that cannot talk to this server is reported)
            print(f"  {name:28s} skipped: {str(err).splitlines()[0][:120]}")
            continue
        assert dst.stat().st_size == size
        dst.unlink()
        w, r = _mbps(size, up), _mbps(size, down)
        base.setdefault("w", w)
        base.setdefault("r", r)
        disk = _mbps(size, local_w)
        print(f"  {name:28s} upload {w:8.0f} ({w / base['w']:.2f}x) [{w / disk:.2f}x]   "
              f"download {r:8.0f} ({r / base['r']:.2f}x)")
    src.unlink()


# ---------------------------------------------------------------------------------------- datasets


def _write_hdf5(path: Path, mb: int) -> None:
    import h5py

    rows = (mb << 20) // (256 * 4)
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("x", shape=(rows, 256), dtype=np.float32, chunks=(4096, 256))
        for lo in range(0, rows, 65536):
            hi = min(rows, lo + 65536)
            data[lo:hi] = rng.standard_normal((hi - lo, 256), dtype=np.float32)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _read_hdf5(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        data = f["x"]
        for lo in range(0, data.shape[0], 65536):
            data[lo:lo + 65536].sum()


def _write_parquet(path: Path, mb: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = (mb << 20) // (16 * 8)
    rng = np.random.default_rng(2)
    with pq.ParquetWriter(path, pa.schema([(f"f{i}", pa.float64()) for i in range(16)])) as writer:
        for lo in range(0, rows, 1 << 20):
            n = min(rows - lo, 1 << 20)
            writer.write_table(pa.table({f"f{i}": rng.standard_normal(n) for i in range(16)}))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _read_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    pq.read_table(path)


def bench_datasets(server: ObjectServer, bucket: str, work: Path, mb: int) -> None:
    from gpubatch_jobs import storage

    print(f"\n2. {server.scheme}:// datasets through gpubatch_jobs.storage, ~{mb} MB each: publish = build "
          "in scratch + upload, stage-in = download + read (MB/s; ratio to local disk)")
    for name, write, read in (("HDF5", _write_hdf5, _read_hdf5), ("Parquet", _write_parquet, _read_parquet)):
        local = work / f"data.{name.lower()}"
        w_local = _timed(lambda: write(local, mb))  # noqa: B023
        size = local.stat().st_size
        r_local = _timed(lambda: read(local))  # noqa: B023
        url = server.url(bucket, f"datasets/{local.name}")
        s3_file = work / f"s3-{local.name}"
        # write: built on local scratch, then uploaded (what the engines do)
        w_s3 = _timed(lambda: (write(s3_file, mb), storage.upload(s3_file, url)))  # noqa: B023
        s3_file.unlink()
        shutil.rmtree(storage.scratch_root(), ignore_errors=True)
        r_s3 = _timed(lambda: read(storage.local_input(url, field_name="bench")))  # noqa: B023
        local.unlink()
        shutil.rmtree(storage.scratch_root(), ignore_errors=True)
        lw, lr, sw, sr = (_mbps(size, t) for t in (w_local, r_local, w_s3, r_s3))
        print(f"  {name:8s} {size / 1e6:6.0f} MB   local write {lw:6.0f}  read {lr:6.0f}   "
              f"{server.scheme} publish {sw:6.0f} ({sw / lw:.2f}x)  stage-in {sr:6.0f} ({sr / lr:.2f}x)")


# ---------------------------------------------------------------------------------------- jobs


def _gpubatch(manifest: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)],
                          env={**os.environ, **env, "PYTHONPATH": f"{ROOT / 'jobs'}:{ROOT}"},
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_jobs(server: ObjectServer, bucket: str, work: Path, images: int) -> None:
    import h5py
    import pandas as pd

    from gpubatch_jobs import storage
    from tests.unit.test_predict_support import make_artifact

    root = server.url(bucket)
    print(f"\n3. jobs: {server.scheme}:// input and output against local paths (end to end, CPU)")
    rng = np.random.default_rng(3)
    series = 100 + np.cumsum(rng.standard_normal(images + 63))
    with h5py.File(work / "series.h5", "w") as f:
        f["close"] = series
    storage.upload(work / "series.h5", f"{root}/jobs/series.h5")
    model = make_artifact(work / "model")
    for path in model.rglob("*"):
        if path.is_file():
            storage.upload(path, f"{root}/jobs/model/{path.relative_to(model)}")
    docs = 2000
    table = pd.DataFrame(rng.normal(size=(docs * 50, 3)), columns=["f0", "f1", "f2"])
    table.insert(0, "pos", np.tile(np.arange(50), docs))
    table.insert(0, "doc", np.repeat([f"d{i}" for i in range(docs)], 50))
    table.to_parquet(work / "rows.parquet")
    storage.upload(work / "rows.parquet", f"{root}/jobs/rows.parquet")

    def render_spec(src: str, out: str) -> dict[str, Any]:
        return {"kind": "RenderJob", "spec": {"input": {"path": src, "dataset": "close"},
                                              "output": {"path": out}, "seqLen": 64, "width": 128,
                                              "height": 96, "device": {"policy": "cpu"}}}

    def predict_spec(src: str, model_path: str, out: str) -> dict[str, Any]:
        return {"kind": "PredictJob", "spec": {"model": model_path, "device": {"policy": "cpu"},
                                               "input": {"path": src, "idColumn": "doc", "positionColumn": "pos"},
                                               "output": {"path": out}}}

    cases = [
        ("render", "images/s", "imagesPerSecond",
         render_spec(str(work / "series.h5"), str(work / "out" / "charts.h5")),
         render_spec(f"{root}/jobs/series.h5", f"{root}/jobs/out/charts.h5")),
        ("predict", "windows/s", "windowsPerSecondEndToEnd",
         predict_spec(str(work / "rows.parquet"), str(model), str(work / "out" / "pred.parquet")),
         predict_spec(f"{root}/jobs/rows.parquet", f"{root}/jobs/model",
                      f"{root}/jobs/out/pred.parquet")),
    ]
    env = {"GPUBATCH_SCRATCH": str(work / "scratch")}  # the server's variables are in os.environ
    for name, unit, key, local_spec, s3_spec in cases:
        figures = []
        for where, body in (("local", local_spec), (server.scheme, s3_spec)):
            manifest = work / f"{name}-{where}.json"
            manifest.write_text(json.dumps({"apiVersion": "gpubatch.dev/v1alpha1",
                                            "metadata": {"name": f"{name}-{where}"}, **body}))
            summary = _gpubatch(manifest, env)
            items = summary.get("images") or summary["items"]["windows"]
            rate = items / summary["elapsedSeconds"] if name == "render" else summary[key]
            figures.append((where, rate, summary["elapsedSeconds"]))
        (_, base, _), (_, s3_rate, _) = figures
        detail = "   ".join(f"{w} {r:8.0f} {unit} ({s:.1f} s)" for w, r, s in figures)
        print(f"  {name:8s} {detail}   {server.scheme}/local {s3_rate / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024, help="dataset size in MB (default 1024)")
    parser.add_argument("--repeat", type=int, default=2, help="raw-object runs per library (best kept)")
    parser.add_argument("--images", type=int, default=20_000, help="images of the render job")
    parser.add_argument("--skip-libraries", action="store_true")
    parser.add_argument("--skip-datasets", action="store_true")
    parser.add_argument("--skip-jobs", action="store_true")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated (default s3,gs,az)")
    args = parser.parse_args()

    for scheme in args.schemes.split(","):
        bench_scheme(scheme.strip(), args)


def bench_scheme(scheme: str, args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="gpubatch-bench-storage-"))
    saved = dict(os.environ)
    try:
        with running(scheme) as server:
            for key in [k for k in os.environ if k.startswith(("AWS_", "AZURE_STORAGE_", "GOOGLE_", "STORAGE_EMU"))]:
                del os.environ[key]
            os.environ.update({**server.env(), "GPUBATCH_SCRATCH": str(work / "scratch")})
            bucket = "bench"
            server.create_bucket(bucket)
            print(f"\n== {scheme}://: {type(server).__name__} on loopback; {os.cpu_count()} CPUs")
            if not args.skip_libraries:
                bench_libraries(server, bucket, work, args.mb, args.repeat)
            if not args.skip_datasets:
                bench_datasets(server, bucket, work, args.mb)
            if not args.skip_jobs:
                bench_jobs(server, bucket, work, args.images)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()

"""Each kind through object storage on real servers, once per scheme (s3:// on SeaweedFS, gs:// on
fake-gcs-server, az:// on Azurite), with `gpubatch run` as a user runs it.

Inputs are uploaded to a fresh bucket; manifests name only its URLs; the
cloud's usual variables come from the environment (as on a laptop). Kills are SIGKILLs
of the real process, and every re-run gets a new scratch folder, so what it
resumes from can only be what is in the bucket (as a pod on another node).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs import storage
from gpubatch_jobs.errors import BadInput
from tests.objstore.servers import ObjectServer
from tests.progress import steps_into_epoch

pytestmark = pytest.mark.slow

SEQ_LEN = 32
N_POINTS = 6_000


def _run(manifest: Path, env: dict[str, str], scratch: Path, *extra: str,
         timeout: float = 900) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest), *extra],
                          env={**os.environ, **env, "GPUBATCH_SCRATCH": str(scratch)},
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return proc.returncode, summary, proc.stderr


def _start(manifest: Path, env: dict[str, str], scratch: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest)],
                            env={**os.environ, **env, "GPUBATCH_SCRATCH": str(scratch)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# A publish through a temporary object (az://) killed mid-way leaves `.NAME.partial-<12 hex>`
# beside the final name (never the final name itself); the next publish of NAME removes it.
_DRIVER_TEMP = re.compile(r"(^|/)\.[^/]+\.partial-[0-9a-f]{12}$")


def _no_partials(server: ObjectServer, bucket: str, *, after_kill: bool = False) -> dict[str, int]:
    keys = server.keys(bucket)
    left = [k for k in keys if ".partial" in k or k.endswith(".tmp")]
    if after_kill:
        left = [k for k in left if not _DRIVER_TEMP.search(k)]
    assert not left, keys
    return {k: v for k, v in keys.items() if not _DRIVER_TEMP.search(k)}


def _render_manifest(folder: Path, root: str, shards: int, **extra: Any) -> Path:
    spec = {"input": {"path": f"{root}/data/series.h5", "dataset": "close", "labels": "up"},
            "output": {"path": f"{root}/out/charts.h5"},
            "seqLen": SEQ_LEN, "stride": 1, "width": 96, "height": 64, "batchSize": 256, "shards": shards,
            "device": {"policy": "cpu"}, "previewImages": 4, **extra}
    manifest = folder / "render.yaml"
    manifest.write_text(json.dumps({"apiVersion": "gpubatch.dev/v1alpha1", "kind": "RenderJob",
                                    "metadata": {"name": "objstore-render"}, "spec": spec}))
    return manifest


def _put_series(folder: Path, root: str) -> None:
    rng = np.random.default_rng(7)
    close = 50 + np.cumsum(rng.standard_normal(N_POINTS))
    with h5py.File(folder / "series.h5", "w") as f:
        f["close"] = close
        f["up"] = (np.diff(close, append=close[-1]) > 0).astype(np.int8)
    storage.upload(folder / "series.h5", f"{root}/data/series.h5")


def test_render_killed_mid_run_resumes_to_exactly_n_images(
        store: ObjectServer, store_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    _put_series(tmp_path, store.url(bucket))
    manifest = _render_manifest(tmp_path, store.url(bucket), shards=4)
    expected = N_POINTS - SEQ_LEN + 1
    part = "out/charts.shard-00000-of-00004.h5"

    victim = _start(manifest, store_env, tmp_path / "scratch-1")
    deadline = time.monotonic() + 600
    while part not in store.keys(bucket):
        assert victim.poll() is None, "the render ended before its first shard was published"
        assert time.monotonic() < deadline, "no shard published within 10 minutes"
        time.sleep(0.2)
    victim.kill()
    victim.wait(timeout=60)
    keys = _no_partials(store, bucket, after_kill=True)
    assert "out/charts.h5" not in keys, "the render was killed before its end but the output exists"
    finished = sorted(k for k in keys if ".shard-" in k)
    for key in finished:  # every published part is whole
        local = storage.local_input(f"{store.url(bucket)}/{key}", field_name="part")
        with h5py.File(local, "r") as f:
            assert bool(f.attrs["complete"])

    code, summary, err = _run(manifest, store_env, tmp_path / "scratch-2")  # another "node": empty scratch
    assert code == 0, err[-3000:]
    assert summary["output"] == f"{store.url(bucket)}/out/charts.h5"
    assert summary["images"] == expected
    # the parts published before the kill were skipped, not rendered again
    assert summary["rendered"] == expected - sum(_part_count(store, bucket, k) for k in finished)
    keys = _no_partials(store, bucket)
    assert {f"out/charts.shard-0000{i}-of-00004.h5" for i in range(4)} <= set(keys)
    assert "out/charts.preview.png" in keys
    out = storage.local_input(f"{store.url(bucket)}/out/charts.h5", field_name="out")
    with h5py.File(out, "r") as f:
        assert f["images"].shape == (expected, 64, 96)
        assert np.array_equal(f["index"][:], np.arange(expected))  # each window once, in order
        assert not f.attrs["virtual"]
        assert int(f["images"][expected - 1].max()) > 0  # the last image is drawn, not fill

    # A third run finds everything published and renders nothing.
    code, summary, err = _run(manifest, store_env, tmp_path / "scratch-3")
    assert code == 0, err[-3000:]
    assert summary["rendered"] == 0


def _part_count(server: ObjectServer, bucket: str, key: str) -> int:
    local = storage.local_input(f"{server.url(bucket)}/{key}", field_name="part")
    with h5py.File(local, "r") as f:
        return int(f["images"].shape[0])


def test_render_errors_name_the_url_and_the_fix(store: ObjectServer, store_env: dict[str, str], bucket: str,
                                               tmp_path: Path) -> None:
    _put_series(tmp_path, store.url(bucket))
    manifest = _render_manifest(tmp_path, store.url(bucket), shards=1)

    code, summary, _ = _run(manifest, {**store_env, **store.wrong_credentials_env(tmp_path)}, tmp_path / "s1")
    assert code == 1 and not summary["ok"]
    assert store.wrong_credentials_hint in summary["message"] and f"{store.url(bucket)}/" in summary["message"]

    wrong = _render_manifest(tmp_path, store.url(f"missing-{bucket}"), shards=1)
    code, summary, _ = _run(wrong, store_env, tmp_path / "s2")
    assert code == 1 and not summary["ok"]
    assert f"missing-{bucket}" in summary["message"] and "does not exist" in summary["message"]
    assert _no_partials(store, bucket) == {"data/series.h5": (tmp_path / "series.h5").stat().st_size}


TRAIN_EPOCHS = 5


def _train_manifest(folder: Path, root: str) -> Path:
    manifest = folder / "train.yaml"
    manifest.write_text(f"""\
apiVersion: gpubatch.dev/v1alpha1
kind: TrainJob
metadata:
  name: objstore-train
spec:
  device:
    policy: cpu
  model:
    type: dnn
    hiddenUnits: [64, 64]
  epochs: {TRAIN_EPOCHS}
  batchSize: 16
  input:
    path: {root}/data/rows.parquet
  output:
    path: {root}/models/dnn
""")
    return manifest


def _committed_epoch(root: str) -> int:
    try:
        return int(json.loads(storage.read_bytes(f"{root}/models/dnn/checkpoints/latest.json"))["epoch"])
    except (BadInput, ValueError, KeyError):  # not written yet
        return 0


def test_train_killed_after_epoch_two_resumes_from_bucket_checkpoints(
        store: ObjectServer, store_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24_000, 16)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(16)}, "label": label}).to_parquet(tmp_path / "rows.parquet")
    storage.upload(tmp_path / "rows.parquet", f"{store.url(bucket)}/data/rows.parquet")
    manifest = _train_manifest(tmp_path, store.url(bucket))

    victim = _start(manifest, store_env, tmp_path / "scratch-1")
    deadline = time.monotonic() + 600
    while _committed_epoch(store.url(bucket)) < 2:
        assert victim.poll() is None, "training ended before the checkpoint of epoch 2"
        assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 10 minutes"
        time.sleep(0.2)
    victim.kill()
    victim.wait(timeout=60)
    killed_at = _committed_epoch(store.url(bucket))
    assert 2 <= killed_at < TRAIN_EPOCHS, "the run finished before it could be killed; make epochs longer"
    keys = _no_partials(store, bucket, after_kill=True)
    assert "models/dnn/model.keras" not in keys
    # the checkpoint latest.json names is whole: its arrays are there
    assert f"models/dnn/checkpoints/epoch-{killed_at:04d}/model.weights.npz" in keys

    code, summary, err = _run(manifest, store_env, tmp_path / "scratch-2")  # another node: nothing local
    assert code == 0, err[-3000:]
    assert summary["epochs"] == TRAIN_EPOCHS and summary["resumedFromEpoch"] == killed_at
    assert summary["output"] == f"{store.url(bucket)}/models/dnn"
    keys = _no_partials(store, bucket)
    for name in ("model.keras", "preprocessing.json", "metrics.json", "summary.json", "training_curves.png"):
        assert f"models/dnn/{name}" in keys
    metrics = json.loads(storage.read_bytes(f"{store.url(bucket)}/models/dnn/metrics.json"))
    assert metrics["history"]["epoch"] == list(range(1, TRAIN_EPOCHS + 1))
    assert metrics["epochsThisRun"] == TRAIN_EPOCHS - killed_at
    # one checkpoint epoch is kept (the last), as on a local disk
    assert sorted({k.split("/")[3] for k in keys if k.startswith("models/dnn/checkpoints/epoch-")}) == [
        f"epoch-{TRAIN_EPOCHS:04d}"]


@pytest.mark.spark
@pytest.mark.parametrize("store", ["s3"], indirect=True)  # same code path; the kill tests run per scheme
@pytest.mark.parametrize("fmt", ["parquet"])
def test_predict_local_and_spark_through_object_storage(store: ObjectServer, store_env: dict[str, str], bucket: str,
                                            tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("pyspark")
    from tests.unit.test_predict_support import make_artifact, make_rows

    model = make_artifact(tmp_path / "model")
    for path in sorted(model.rglob("*")):
        if path.is_file():
            storage.upload(path, f"{store.url(bucket)}/models/rnn/{path.relative_to(model)}")
    rows = make_rows()
    rows.to_parquet(tmp_path / "rows.parquet")
    storage.upload(tmp_path / "rows.parquet", f"{store.url(bucket)}/data/rows.parquet")

    outputs = {}
    for engine in ("local", "spark"):
        manifest = tmp_path / f"predict-{engine}.yaml"
        manifest.write_text(json.dumps({
            "apiVersion": "gpubatch.dev/v1alpha1", "kind": "PredictJob", "metadata": {"name": f"p-{engine}"},
            "spec": {"model": f"{store.url(bucket)}/models/rnn", "engine": engine, "device": {"policy": "cpu"},
                     "input": {"path": f"{store.url(bucket)}/data/rows.parquet", "idColumn": "doc",
                               "positionColumn": "pos"},
                     "output": {"path": f"{store.url(bucket)}/out/{engine}.{fmt}"},
                     **({"spark": {"master": "local[2]"}} if engine == "spark" else {})}}))
        code, summary, err = _run(manifest, store_env, tmp_path / f"scratch-{engine}")
        assert code == 0, err[-3000:]
        assert summary["engine"] == engine and summary["output"] == f"{store.url(bucket)}/out/{engine}.{fmt}"
        local = storage.local_input(summary["output"], field_name="out")
        outputs[engine] = pd.read_parquet(local)
        assert len(outputs[engine]) == len(rows)
        # an existing output is refused without overwrite, naming the URL
        code, summary, _ = _run(manifest, store_env, tmp_path / f"scratch-{engine}-again")
        assert code == 1 and f"{store.url(bucket)}/out/{engine}.{fmt}" in summary["message"]
    pd.testing.assert_frame_equal(outputs["local"], outputs["spark"], check_exact=False, atol=1e-5)
    _no_partials(store, bucket)


def _latest(root: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(f"{root}/models/dnn/checkpoints/latest.json"))  # type: ignore[no-any-return]
    except (BadInput, ValueError):
        return {}


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # same code path; the kill tests run per scheme
def test_train_sigterm_mid_epoch_resumes_to_the_step_from_s3(
        store: ObjectServer, store_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    """SIGTERM: the step checkpoint goes to the bucket (arrays, then latest.json); a run with an
    empty scratch (another node) resumes at that step, not at the epoch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24_000, 16)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(16)}, "label": label}).to_parquet(tmp_path / "rows.parquet")
    storage.upload(tmp_path / "rows.parquet", f"{store.url(bucket)}/data/rows.parquet")
    manifest = _train_manifest(tmp_path, store.url(bucket))

    progress = tmp_path / "progress.json"
    victim = subprocess.Popen([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(manifest),
                               "--progress-file", str(progress)],
                              env={**os.environ, **store_env, "GPUBATCH_SCRATCH": str(tmp_path / "scratch-1")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    # SIGTERM once epoch 2 has begun (its first step reported), with epoch 1's checkpoint in the bucket.
    while steps_into_epoch(progress, 2, TRAIN_EPOCHS) < 1 or int(_latest(store.url(bucket)).get("epoch", 0)) < 1:
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "epoch 2 did not begin within 10 minutes"
        time.sleep(0.05)
    victim.send_signal(signal.SIGTERM)
    stdout, stderr = victim.communicate(timeout=300)
    assert victim.returncode == 143, stderr[-3000:]
    checkpoint = json.loads(stdout.strip().splitlines()[-1])["checkpoint"]
    assert checkpoint["step"] > 0 and checkpoint["place"].startswith(f"{store.url(bucket)}/models/dnn/checkpoints/epoch-")
    keys = _no_partials(store, bucket)
    name = f"epoch-{checkpoint['epoch']:04d}-step-{checkpoint['step']:06d}"
    for array in ("model.weights.npz", "optimizer.npz", "rng.npz", "metrics.npz"):
        assert f"models/dnn/checkpoints/{name}/{array}" in keys

    code, summary, err = _run(manifest, store_env, tmp_path / "scratch-2")  # another node: nothing local
    assert code == 0, err[-3000:]
    assert summary["resumedFrom"] == {"epoch": checkpoint["epoch"], "step": checkpoint["step"]}
    metrics = json.loads(storage.read_bytes(f"{store.url(bucket)}/models/dnn/metrics.json"))
    assert metrics["history"]["epoch"] == list(range(1, TRAIN_EPOCHS + 1))


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # same code path; the kill tests run per scheme
def test_render_sigterm_uploads_the_partial_file_and_another_node_resumes(
        store: ObjectServer, store_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    _put_series(tmp_path, store.url(bucket))
    # One image a batch, each committed: slow enough (some 10 s) that the signal 1 s after the
    # partial file appears lands mid-run; with 32 a batch a fast run was over 2 s after it.
    manifest = _render_manifest(tmp_path, store.url(bucket), shards=1, width=320, height=240, batchSize=1)
    victim = subprocess.Popen([sys.executable, "-m", "gpubatch_jobs.cli", "run", str(manifest)],
                              env={**os.environ, **store_env, "GPUBATCH_SCRATCH": str(tmp_path / "scratch-1")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "scratch-1"
    deadline = time.monotonic() + 600
    while not list(partial.rglob(".charts.h5.partial")):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no partial file within 10 minutes"
        time.sleep(0.1)
    time.sleep(1)
    victim.send_signal(signal.SIGTERM)
    stdout, stderr = victim.communicate(timeout=300)
    assert victim.returncode == 143, stderr[-3000:]
    kept = json.loads(stdout.strip().splitlines()[-1])["checkpoint"]["done"]
    assert kept > 0
    assert "out/.charts.h5.partial" in store.keys(bucket) and "out/charts.h5" not in store.keys(bucket)

    code, summary, err = _run(manifest, store_env, tmp_path / "scratch-2")
    assert code == 0, err[-3000:]
    assert summary["resumedFrom"] == kept and summary["rendered"] == N_POINTS - SEQ_LEN + 1 - kept
    _no_partials(store, bucket)  # the partial object went once the output was published

"""TrainJob end to end on tiny real data: artifacts, reload and re-score, reruns, class weights, devices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs import devices
from gpubatch_jobs.artifacts import (
    CURVES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    SUMMARY_FILE,
    load_artifact,
    window_starts,
)
from gpubatch_jobs.errors import BadInput, GpuUnusable
from gpubatch_jobs.spec.kinds import TrainJobSpec
from gpubatch_jobs.train import run
from gpubatch_jobs.train.scores import classification_scores
from tests.unit.local import run_context


@pytest.fixture(autouse=True)
def _no_real_gpu_probe(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("GPUBATCH_FAKE_GPU", "none")
    devices.reset_cache()
    yield
    devices.reset_cache()


def blobs(n: int = 300, seed: int = 0, minority: float = 0.5) -> pd.DataFrame:
    """Two well separated classes in 4-D, with an id column that must not become a feature."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < minority, "b", "a")
    centre = np.where(labels == "b", 1.5, -1.5)[:, None]
    x = rng.normal(size=(n, 4)) + centre
    return pd.DataFrame({"row_id": np.arange(n), **{f"x{i}": x[:, i] for i in range(4)}, "label": labels})


def spec_of(model: dict[str, Any], path: str, **extra: Any) -> TrainJobSpec:
    inputs = extra.pop("input", {})
    return TrainJobSpec.model_validate({
        "model": model, "epochs": 3, "batchSize": 32, "learningRate": 0.01,
        "input": {"path": path, **inputs}, "output": {"path": "out/model", **extra.pop("output", {})},
        **extra,
    })


def test_dnn_writes_the_artifact_and_the_reloaded_model_scores_the_same(tmp_path: Path) -> None:
    blobs().to_csv(tmp_path / "blobs.csv", index=False)
    spec = spec_of({"type": "dnn", "hiddenUnits": [8]}, "blobs.csv", input={"idColumn": "row_id"})
    summary = run(spec, run_context(spec, base_dir=tmp_path))

    out = tmp_path / "out" / "model"
    for name in (MODEL_FILE, PREPROCESSING_FILE, METRICS_FILE, CURVES_FILE, SUMMARY_FILE):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*partial*")), "temporary files must be gone"
    assert summary["ok"] and summary["device"] == "cpu" and summary["epochs"] == 3
    assert summary["fallbacks"] and "faked" in summary["fallbacks"][0]
    assert summary["samplesPerSecond"] > 0 and summary["batchSize"] == 32
    assert (out / CURVES_FILE).read_bytes()[:4] == b"\x89PNG"

    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["history"]["epoch"] == [1, 2, 3]
    assert len(metrics["history"]["loss"]) == 3 and len(metrics["history"]["val_accuracy"]) == 3
    assert metrics["device"] == "cpu" and metrics["samplesPerSecond"] > 0
    assert set(metrics["validation"]["perClass"]) == {"a", "b"}

    model, prep = load_artifact(out)
    assert prep.feature_columns == ["x0", "x1", "x2", "x3"]  # not row_id, not label
    frame = blobs()
    probabilities = model.predict(prep.transform(frame[prep.feature_columns].to_numpy()), verbose=0)
    truth = np.searchsorted(prep.classes, frame["label"].to_numpy())
    independent = classification_scores(truth, probabilities.argmax(axis=1), prep.classes)
    assert independent["accuracy"] > 0.9
    assert metrics["validation"]["accuracy"] > 0.85


def _documents(n_docs: int = 12, seed: int = 1) -> pd.DataFrame:
    """Lines whose label is visible only through context: a 'block' lasts between markers."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_docs):
        inside = False
        for p in range(int(rng.integers(10, 30))):
            marker = float(rng.random() < 0.15)
            if marker:
                inside = not inside
            rows.append({"doc": f"doc{d:02d}", "pos": p, "marker": marker, "noise": rng.normal(),
                         "label": "inside" if inside else "outside"})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # unsorted on purpose


def test_rnn_labels_every_row_and_reloads(tmp_path: Path) -> None:
    _documents().to_parquet(tmp_path / "docs.parquet", index=False)
    spec = spec_of({"type": "rnn", "cell": "gru", "layers": 1, "hiddenSize": 8, "bidirectional": True,
                    "windowSize": 12, "windowStride": 6}, "docs.parquet",
                   input={"idColumn": "doc", "positionColumn": "pos"}, validationSplit=0.25, epochs=2)
    summary = run(spec, run_context(spec, base_dir=tmp_path))
    assert summary["items"]["unit"] == "windows"
    metrics = json.loads((tmp_path / "out/model" / METRICS_FILE).read_text())
    assert metrics["samples"]["documents"] == {"train": 9, "validation": 3}
    assert metrics["validation"]["unit"] == "rows"

    model, prep = load_artifact(tmp_path / "out/model")
    assert (prep.window_size, prep.window_stride, prep.id_column) == (12, 6, "doc")
    frame = _documents().sort_values(["doc", "pos"])
    one_doc = frame[frame["doc"] == "doc00"]
    scaled = prep.transform(one_doc[prep.feature_columns].to_numpy())
    starts = window_starts(len(scaled), 12, 6)
    windows = np.zeros((len(starts), 12, prep.n_features), np.float32)
    for k, start in enumerate(starts):
        part = scaled[start:start + 12]
        windows[k, :len(part)] = part
    out = model.predict(windows, verbose=0)
    assert out.shape == (len(starts), 12, prep.n_classes)
    assert np.allclose(out.sum(axis=-1), 1.0, atol=1e-4)


def test_cnn_trains_on_render_style_hdf5(tmp_path: Path) -> None:
    import h5py

    rng = np.random.default_rng(0)
    images = np.zeros((60, 12, 12), np.uint8)
    labels = np.array([0, 1] * 30, np.int8)
    for i, label in enumerate(labels):  # class 1: a bright row at the top, class 0: at the bottom
        images[i, 1 if label else 10, :] = 255
        images[i] |= (rng.random((12, 12)) < 0.05).astype(np.uint8) * 255
    with h5py.File(tmp_path / "charts.h5", "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
    spec = spec_of({"type": "cnn", "filters": [4, 8]}, "charts.h5", epochs=2)
    summary = run(spec, run_context(spec, base_dir=tmp_path))
    assert summary["items"] == {"unit": "images", "train": 48, "validation": 12, "inputRows": 60}
    model, prep = load_artifact(tmp_path / "out/model")
    assert prep.image_shape == [12, 12] and prep.classes == ["0", "1"]
    assert model.predict(prep.transform(images[:3]), verbose=0).shape == (3, 2)


def test_balanced_class_weights_are_recorded_and_lift_the_minority(tmp_path: Path) -> None:
    frame = blobs(n=400, seed=4, minority=0.06)
    frame["x0"] = frame["x0"] * 0.1  # make the classes overlap so weighting matters
    frame.to_csv(tmp_path / "skewed.csv", index=False)
    recalls = {}
    for weighting in ("none", "balanced"):
        spec = spec_of({"type": "dnn", "hiddenUnits": [8], "dropout": 0.0}, "skewed.csv", classWeight=weighting,
                       epochs=4, output={"path": f"out/{weighting}"})
        run(spec, run_context(spec, base_dir=tmp_path))
        metrics = json.loads((tmp_path / "out" / weighting / METRICS_FILE).read_text())
        recalls[weighting] = metrics["validation"]["perClass"]["b"]["recall"]
        if weighting == "balanced":
            counts = metrics["trainClassCounts"]
            total = sum(counts.values())
            assert metrics["classWeights"] == pytest.approx([total / (2 * counts["a"]), total / (2 * counts["b"])])
        else:
            assert metrics["classWeights"] is None
    assert recalls["balanced"] >= recalls["none"]


def test_rerun_returns_the_finished_result_and_refuses_another_spec(tmp_path: Path) -> None:
    blobs(n=120).to_csv(tmp_path / "blobs.csv", index=False)
    spec = spec_of({"type": "dnn", "hiddenUnits": [4]}, "blobs.csv", epochs=1)
    first = run(spec, run_context(spec, base_dir=tmp_path))
    again = run(spec, run_context(spec, base_dir=tmp_path))
    assert again["alreadyFinished"] and again["specFingerprint"] == first["specFingerprint"]

    changed = spec_of({"type": "dnn", "hiddenUnits": [6]}, "blobs.csv", epochs=1)
    with pytest.raises(BadInput) as caught:
        run(changed, run_context(changed, base_dir=tmp_path))
    assert caught.value.field == "spec.output.path" and "overwrite" in str(caught.value)

    replacing = spec_of({"type": "dnn", "hiddenUnits": [6]}, "blobs.csv", epochs=2, output={"overwrite": True})
    summary = run(replacing, run_context(replacing, base_dir=tmp_path))
    assert summary["epochs"] == 2 and summary["resumedFromEpoch"] == 0


def test_device_policy_gpu_without_a_gpu_is_exit_75(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs(n=60).to_csv(tmp_path / "blobs.csv", index=False)
    monkeypatch.setenv("GPUBATCH_FAKE_GPU", "broken")
    devices.reset_cache()
    spec = spec_of({"type": "dnn", "hiddenUnits": [4]}, "blobs.csv", epochs=1, device={"policy": "gpu"})
    with pytest.raises(GpuUnusable) as caught:
        run(spec, run_context(spec, base_dir=tmp_path))
    assert caught.value.exit_code == 75
    assert not (tmp_path / "out/model" / MODEL_FILE).exists()


def test_broken_gpu_falls_back_to_cpu_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs(n=60).to_csv(tmp_path / "blobs.csv", index=False)
    monkeypatch.setenv("GPUBATCH_FAKE_GPU", "broken")
    devices.reset_cache()
    spec = spec_of({"type": "dnn", "hiddenUnits": [4]}, "blobs.csv", epochs=1)
    summary = run(spec, run_context(spec, base_dir=tmp_path))
    assert summary["device"] == "cpu" and summary["mixedPrecision"] is False
    assert "launch failure" in summary["deviceReason"]


def test_a_gpu_with_tensor_cores_turns_mixed_precision_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    blobs(n=60).to_csv(tmp_path / "blobs.csv", index=False)
    monkeypatch.setenv("GPUBATCH_FAKE_GPU", "ok:1")  # a faked compute capability 9.0 GPU
    devices.reset_cache()
    try:
        spec = spec_of({"type": "dnn", "hiddenUnits": [4]}, "blobs.csv", epochs=1)
        summary = run(spec, run_context(spec, base_dir=tmp_path))
    finally:
        keras.config.set_dtype_policy("float32")
    assert summary["device"] == "gpu" and summary["mixedPrecision"] is True
    metrics = json.loads((tmp_path / "out/model" / METRICS_FILE).read_text())
    assert metrics["computeCapability"] == "9.0" and "tensor cores" in metrics["mixedPrecisionReason"]

"""TrainJob building blocks: windows, splits, class weights, scores, precision choice, model shapes."""

from __future__ import annotations

import numpy as np
import pytest

from gpubatch_jobs.artifacts import Preprocessing, window_starts
from gpubatch_jobs.devices import DeviceChoice, GpuInfo
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.spec.kinds import TrainModelSpec
from gpubatch_jobs.train.backend import decide_mixed_precision
from gpubatch_jobs.train.dataset import cut_windows
from gpubatch_jobs.train.scores import classification_scores, merge_windows
from gpubatch_jobs.train.split import balanced_class_weights, document_split, stratified_split


@pytest.mark.parametrize(("length", "window", "stride", "starts"), [
    (10, 4, 2, [0, 2, 4, 6]),
    (11, 4, 2, [0, 2, 4, 6, 7]),  # the last window is aligned to the end
    (4, 4, 2, [0]),
    (3, 4, 2, [0]),  # shorter than the window: one padded window
    (10, 5, 5, [0, 5]),
    (9, 3, 1, list(range(7))),
])
def test_window_starts_cover_every_row(length: int, window: int, stride: int, starts: list[int]) -> None:
    assert window_starts(length, window, stride) == starts
    covered = {s + i for s in starts for i in range(min(window, length))}
    assert covered == set(range(length))


def test_cut_windows_pads_short_documents_with_zero_weight() -> None:
    scaled = np.arange(9, dtype=np.float32).reshape(9, 1) + 1
    labels = np.arange(9) % 2
    x, y, mask, plan = cut_windows(scaled, labels, [(0, 3), (3, 9)], window=4, stride=2, pad_value=0.0)
    assert x.shape == (3, 4, 1) and y.shape == (3, 4)
    assert mask[0].tolist() == [1, 1, 1, 0] and x[0, 3, 0] == 0.0
    assert plan.tolist() == [[0, 3], [3, 4], [5, 4]]
    assert x[2, :, 0].tolist() == [6, 7, 8, 9]


def test_merge_windows_averages_overlaps_per_row() -> None:
    probabilities = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.8, 0.2], [0.0, 1.0]]])
    rows, predicted = merge_windows(probabilities, np.array([[0, 2], [1, 2]]), 4)
    assert rows.tolist() == [0, 1, 2]
    assert predicted.tolist() == [0, 0, 1]  # row 1: (0.4 + 0.8) / 2 beats (0.6 + 0.2) / 2


def test_stratified_split_keeps_every_class_in_both_parts() -> None:
    ids = np.array([0] * 50 + [1] * 6 + [2] * 2)
    train, val = stratified_split(ids, 0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(ids)))
    assert set(ids[val]) == {0, 1, 2} and set(ids[train]) == {0, 1, 2}
    assert np.bincount(ids[val]).tolist() == [10, 1, 1]
    again, _ = stratified_split(ids, 0.2, seed=3)
    assert np.array_equal(train, again)


def test_document_split_never_shares_a_document() -> None:
    docs = [f"d{i}" for i in range(10)]
    train, val = document_split(docs, 0.3, seed=1)
    assert len(val) == 3 and not set(train) & set(val) and set(train) | set(val) == set(docs)
    with pytest.raises(BadInput) as caught:
        document_split(["only"], 0.2, seed=1)
    assert caught.value.field == "spec.validationSplit"


def test_balanced_class_weights_match_the_inverse_frequency() -> None:
    ids = np.array([0] * 80 + [1] * 20)
    weights = balanced_class_weights(ids, 3)
    assert weights.tolist() == pytest.approx([100 / (2 * 80), 100 / (2 * 20), 0.0])
    assert (weights[ids].sum()) == pytest.approx(len(ids))  # same total weight as unweighted


def test_scores_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    scores = classification_scores(y_true, y_pred, ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(4 / 6)
    f1 = {"a": 0.8, "b": 0.5, "c": 2 / 3}
    for name, value in f1.items():
        assert scores["perClass"][name]["f1"] == pytest.approx(value)
    assert scores["macroF1"] == pytest.approx(np.mean(list(f1.values())))
    assert scores["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def _gpu(cc: str) -> DeviceChoice:
    return DeviceChoice("gpu", "tensorflow", "test", gpus=(GpuInfo(0, "GPU", 1, 1, "", cc),))


CPU = DeviceChoice("cpu", "cpu", "test", fell_back=True)


@pytest.mark.parametrize(("setting", "choice", "enabled"), [
    ("auto", _gpu("9.0"), True),
    ("auto", _gpu("7.0"), True),
    ("auto", _gpu("6.1"), False),
    ("auto", _gpu(""), False),
    ("auto", CPU, False),
    ("off", _gpu("9.0"), False),
    ("on", _gpu("6.1"), True),
    ("on", CPU, True),
])
def test_mixed_precision_auto_needs_tensor_cores(setting: str, choice: DeviceChoice, enabled: bool) -> None:
    capability = choice.gpus[0].compute_capability if choice.gpus else None
    got, reason = decide_mixed_precision(setting, choice, capability or None)
    assert got is enabled and reason


def test_preprocessing_round_trips_and_names_nan_columns(tmp_path) -> None:
    prep = Preprocessing("rnn", feature_columns=["a", "b"], label_column="label", classes=["x", "y"],
                         mean=[1.0, 2.0], scale=[2.0, 4.0], id_column="doc", window_size=8, window_stride=4)
    prep.save(tmp_path)
    loaded = Preprocessing.load(tmp_path)
    assert loaded == prep
    assert loaded.transform(np.array([[3.0, 6.0]])).tolist() == [[1.0, 1.0]]
    assert loaded.class_names(np.array([1, 0])).tolist() == ["y", "x"]
    with pytest.raises(BadInput, match="'b'"):
        loaded.transform(np.array([[0.0, np.nan]]))
    (tmp_path / "preprocessing.json").write_text("{not json")
    with pytest.raises(BadInput) as caught:
        Preprocessing.load(tmp_path)
    assert caught.value.path and caught.value.path.endswith("preprocessing.json")


def test_load_model_of_an_unfinished_folder_names_the_path(tmp_path) -> None:
    from gpubatch_jobs.artifacts import load_model

    with pytest.raises(BadInput) as caught:
        load_model(tmp_path)
    assert caught.value.path and caught.value.path.endswith("model.keras")
    (tmp_path / "model.keras").write_bytes(b"half a zip")
    with pytest.raises(BadInput, match="not a readable .keras file"):
        load_model(tmp_path)


@pytest.mark.parametrize(("model", "kwargs", "input_shape", "output_shape"), [
    ({"type": "dnn", "hiddenUnits": [8, 4]}, {"n_features": 5, "n_classes": 3}, (None, 5), (None, 3)),
    ({"type": "rnn", "cell": "lstm", "layers": 2, "hiddenSize": 6},
     {"n_features": 7, "n_classes": 4, "window_size": 12}, (None, 12, 7), (None, 12, 4)),
    ({"type": "rnn", "cell": "gru", "layers": 1, "hiddenSize": 6, "bidirectional": True},
     {"n_features": 3, "n_classes": 2, "window_size": 5}, (None, 5, 3), (None, 5, 2)),
    ({"type": "cnn", "filters": [4, 8, 8]}, {"n_features": 0, "n_classes": 2, "image_shape": [16, 24]},
     (None, 16, 24, 1), (None, 2)),
])
def test_models_have_the_contracted_shapes(model: dict, kwargs: dict, input_shape: tuple,
                                           output_shape: tuple) -> None:
    from gpubatch_jobs.train.models import build_model

    built = build_model(TrainModelSpec.model_validate(model), **kwargs)
    assert tuple(built.input_shape) == input_shape
    assert tuple(built.output_shape) == output_shape
    assert built.layers[-1].dtype_policy.compute_dtype == "float32"
    names = [type(layer).__name__ for layer in built.layers]
    assert "Masking" not in names  # the rnn contract: no mask, cuDNN stays usable
    sample = np.zeros((2, *input_shape[1:]), np.float32)
    out = np.asarray(built(sample))
    assert np.allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_keras_backend_cannot_switch_once_loaded() -> None:
    import keras

    from gpubatch_jobs.train.backend import require_backend

    other = "jax" if keras.backend.backend() != "jax" else "torch"
    with pytest.raises(BadInput) as caught:
        require_backend(other)
    assert caught.value.field == "spec.backend" and "fresh process" in str(caught.value)
    require_backend(keras.backend.backend())  # the loaded one is fine


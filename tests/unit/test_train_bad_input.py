"""TrainJob bad input: each case is a BadInput naming the field or column, and nothing is written.

These fail while reading the data, before any framework is loaded, so they
are cheap to run in process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec import SpecError, parse_spec
from gpubatch_jobs.spec.kinds import TrainJobSpec
from gpubatch_jobs.train import run


def tabular(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.where(x[:, 0] > 0, "pos", "neg")})


def sequences(lengths: tuple[int, ...] = (6, 8, 5)) -> pd.DataFrame:
    rows = []
    for d, length in enumerate(lengths):
        for p in range(length):
            rows.append({"doc": f"d{d}", "pos": p, "f": float(p % 3), "g": float(d), "label": "xyz"[p % 3]})
    return pd.DataFrame(rows)


def make_spec(tmp: Path, file: str, model: dict[str, Any] | None = None, **extra: Any) -> TrainJobSpec:
    inputs = extra.pop("input", {})
    return TrainJobSpec.model_validate({
        "model": model or {"type": "dnn", "hiddenUnits": [4]},
        "epochs": 1,
        "input": {"path": file, **inputs},
        "output": {"path": "out/model"},
        **extra,
    })


def write(tmp: Path, name: str, frame: pd.DataFrame) -> str:
    path = tmp / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return name


def _with(frame: pd.DataFrame, **changes: Any) -> pd.DataFrame:
    frame = frame.copy()
    for column, values in changes.items():
        frame[column] = values
    return frame


def _nan_in_b() -> pd.DataFrame:
    frame = tabular()
    frame.loc[7, "b"] = np.nan
    return frame


def _one_sample_class() -> pd.DataFrame:
    frame = tabular()
    frame.loc[3, "label"] = "rare"
    return frame


TABLE_CASES = [
    # (id, frame, spec extras, field expected, words expected in the message)
    ("missing label column", tabular().drop(columns=["label"]), {}, "spec.input.labels", ["'label'"]),
    ("declared label column missing", tabular(), {"input": {"labels": "target"}}, "spec.input.labels", ["'target'"]),
    ("declared feature not numeric", _with(tabular(), colour="red"), {"input": {"features": ["a", "colour"]}},
     "spec.input.features", ["'colour'", "not numeric"]),
    ("mostly numeric text column", _with(tabular(), b=["1.5"] * 39 + ["1.7kg"]), {}, "spec.input.features",
     ["'b'", "'1.7kg'"]),
    ("declared feature missing", tabular(), {"input": {"features": ["a", "zz"]}}, "spec.input.features", ["'zz'"]),
    ("NaN in a feature", _nan_in_b(), {}, "spec.input.features", ["'b'", "NaN", "row 7"]),
    ("NaN in the labels", _with(tabular(), label=[None] + ["x", "y"] * 19 + ["x"]), {}, "spec.input.labels",
     ["missing"]),
    ("class with one sample", _one_sample_class(), {}, "spec.input.labels", ["'rare'", "1 sample"]),
    ("single class", _with(tabular(), label="same"), {}, "spec.input.labels", ["single class"]),
    ("label is also a feature", tabular(), {"input": {"features": ["a", "label"]}}, "spec.input.features",
     ["'label'"]),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("case", "frame", "extra", "field", "words"), TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_bad_table_names_the_column(tmp_path: Path, fmt: str, case: str, frame: pd.DataFrame,
                                    extra: dict[str, Any], field: str, words: list[str]) -> None:
    name = write(tmp_path, f"data.{fmt}", frame)
    with pytest.raises(BadInput) as caught:
        run(make_spec(tmp_path, name, **extra), RunContext(base_dir=tmp_path))
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)
    assert not (tmp_path / "out").exists(), "bad input must leave nothing behind"


SEQUENCE_CASES = [
    ("window longer than every document", {"windowSize": 9}, {}, "spec.model.windowSize", ["longest has 8"]),
    ("stride longer than the window", {"windowSize": 4, "windowStride": 5}, {}, "spec.model.windowStride", ["<="]),
    ("no id column named", {"windowSize": 4}, {"input": {"idColumn": None}}, "spec.input.idColumn", ["idColumn"]),
    ("id column missing", {"windowSize": 4}, {"input": {"idColumn": "file"}}, "spec.input.idColumn", ["'file'"]),
    ("position column missing", {"windowSize": 4}, {"input": {"positionColumn": "line"}},
     "spec.input.positionColumn", ["'line'"]),
    ("validation needs two documents", {"windowSize": 4}, {"validationSplit": 0.5, "only_first_doc": True},
     "spec.validationSplit", ["two documents"]),
]


@pytest.mark.parametrize(("case", "model", "extra", "field", "words"), SEQUENCE_CASES,
                         ids=[c[0] for c in SEQUENCE_CASES])
def test_bad_sequences_name_the_field(tmp_path: Path, case: str, model: dict[str, Any], extra: dict[str, Any],
                                      field: str, words: list[str]) -> None:
    extra = dict(extra)
    frame = sequences()
    if extra.pop("only_first_doc", False):
        frame = frame[frame["doc"] == "d1"]
    name = write(tmp_path, "lines.parquet", frame)
    inputs = {"idColumn": "doc", "positionColumn": "pos", **extra.pop("input", {})}
    spec = make_spec(tmp_path, name, {"type": "rnn", "hiddenSize": 4, "layers": 1, **model},
                     input={k: v for k, v in inputs.items() if v is not None}, **extra)
    with pytest.raises(BadInput) as caught:
        run(spec, RunContext(base_dir=tmp_path))
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_empty_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BadInput) as caught:
        run(make_spec(tmp_path, "empty.csv"), RunContext(base_dir=tmp_path))
    assert caught.value.path and caught.value.path.endswith("empty.csv")
    assert "empty" in str(caught.value)


def test_header_only_file_is_empty(tmp_path: Path) -> None:
    (tmp_path / "head.csv").write_text("a,b,label\n")
    with pytest.raises(BadInput, match="no rows"):
        run(make_spec(tmp_path, "head.csv"), RunContext(base_dir=tmp_path))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as caught:
        run(make_spec(tmp_path, "nowhere.parquet"), RunContext(base_dir=tmp_path))
    assert caught.value.path and "nowhere.parquet" in caught.value.path


def _images_file(tmp: Path, *, images: str = "images", labels: str = "labels", size: int = 8) -> str:
    with h5py.File(tmp / "charts.h5", "w") as f:
        f.create_dataset(images, data=np.zeros((10, size, size), np.uint8))
        f.create_dataset(labels, data=np.array([0, 1] * 5, np.int8))
    return "charts.h5"


@pytest.mark.parametrize(("kwargs", "model", "field", "words"), [
    ({"images": "pixels"}, {}, "spec.input.dataset", ["images", "pixels"]),
    ({"labels": "target"}, {}, "spec.input.labels", ["labels", "target"]),
    ({"size": 8}, {"kernelSize": 9}, "spec.model.kernelSize", ["8x8"]),
])
def test_bad_image_input_names_the_field(tmp_path: Path, kwargs: dict[str, Any], model: dict[str, Any],
                                         field: str, words: list[str]) -> None:
    name = _images_file(tmp_path, **kwargs)
    with pytest.raises(BadInput) as caught:
        run(make_spec(tmp_path, name, {"type": "cnn", **model}), RunContext(base_dir=tmp_path))
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(("model", "field"), [
    ({"type": "dnn", "hiddenUnits": [0]}, "hiddenUnits"),
    ({"type": "dnn", "dropout": 1.0}, "dropout"),
    ({"type": "rnn", "layers": 0}, "layers"),
    ({"type": "rnn", "windowSize": 0}, "windowSize"),
    ({"type": "cnn", "filters": [5000]}, "filters"),
    ({"type": "cnn", "kernelSize": 64}, "kernelSize"),
    ({"type": "svm"}, "type"),
])
def test_model_parameters_out_of_range_are_refused(model: dict[str, Any], field: str) -> None:
    manifest = {"model": model, "input": {"path": "x.csv"}, "output": {"path": "out"}}
    with pytest.raises(SpecError) as caught:
        parse_spec("TrainJob", manifest)
    assert field in str(caught.value)


@pytest.mark.parametrize(("extra", "field"), [
    ({"epochs": 0}, "epochs"),
    ({"validationSplit": 1.0}, "validationSplit"),
    ({"learningRate": 0}, "learningRate"),
    ({"backend": "mxnet"}, "backend"),
    ({"classWeight": "inverse"}, "classWeight"),
])
def test_training_parameters_out_of_range_are_refused(extra: dict[str, Any], field: str) -> None:
    manifest = {"model": {"type": "dnn"}, "input": {"path": "x.csv"}, "output": {"path": "out"}, **extra}
    with pytest.raises(SpecError) as caught:
        parse_spec("TrainJob", manifest)
    assert field in str(caught.value)

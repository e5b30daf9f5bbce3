"""Reading sequences: every format, labels, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.render.inputs import open_source
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec.kinds import RenderJobSpec

SERIES = np.arange(20, dtype=np.float64) ** 1.5
ROWS = np.arange(30, dtype=np.float32).reshape(5, 6)


def spec_for(path: str, **fields: Any) -> RenderJobSpec:
    input_fields = {k: fields.pop(k) for k in ("dataset", "column", "labels", "format", "features") if k in fields}
    return RenderJobSpec.model_validate({"input": {"path": path, **input_fields},
                                         "output": {"path": "out/x.h5"}, "seqLen": 4, **fields})


def write_inputs(folder: Path) -> None:
    with h5py.File(folder / "data.h5", "w") as f:
        f["series"] = SERIES
        f["rows"] = ROWS
        f["row_labels"] = np.array([0, 1, 0, 1, 1], dtype=np.int8)
        f["point_labels"] = np.arange(20, dtype=np.int64)
        f["text"] = np.array([b"a", b"b", b"c", b"d", b"e"])
        f["cube"] = np.zeros((2, 3, 4))
    np.save(folder / "series.npy", SERIES)
    np.save(folder / "rows.npy", ROWS)
    np.save(folder / "row_labels.npy", np.array([1, 2, 3, 4, 5]))
    np.savez(folder / "both.npz", rows=ROWS, y=np.arange(5))
    pd.DataFrame({"day": range(20), "close": SERIES, "up": (np.arange(20) % 2)}).to_csv(folder / "prices.csv", index=False)
    pd.DataFrame(ROWS, columns=[f"p{i}" for i in range(6)]).assign(label=[1, 0, 1, 0, 1]).to_parquet(folder / "rows.parquet")
    pd.DataFrame({"close": SERIES}).to_parquet(folder / "one.parquet")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_inputs(tmp_path)
    return tmp_path


WINDOWS_STRIDE_3 = np.stack([SERIES[s: s + 4] for s in range(0, 17, 3)])


@pytest.mark.parametrize(
    ("path", "fields", "kind", "expected", "labels"),
    [
        ("data.h5", {"dataset": "rows", "labels": "row_labels"}, "rows", ROWS[:, :4], [0, 1, 0, 1, 1]),
        ("data.h5", {"dataset": "series", "stride": 3, "labels": "point_labels"}, "windows", WINDOWS_STRIDE_3,
         [3, 6, 9, 12, 15, 18]),
        ("series.npy", {"stride": 3}, "windows", WINDOWS_STRIDE_3, None),
        ("rows.npy", {"labels": "row_labels.npy"}, "rows", ROWS[:, :4], [1, 2, 3, 4, 5]),
        ("both.npz", {"dataset": "rows", "labels": "y"}, "rows", ROWS[:, :4], [0, 1, 2, 3, 4]),
        ("prices.csv", {"column": "close", "stride": 3, "labels": "up"}, "windows", WINDOWS_STRIDE_3,
         [1, 0, 1, 0, 1, 0]),
        ("rows.parquet", {"labels": "label"}, "rows", ROWS[:, :4], [1, 0, 1, 0, 1]),
        ("one.parquet", {"stride": 3}, "windows", WINDOWS_STRIDE_3, None),
    ],
)
def test_every_format_yields_the_same_sequences(folder: Path, path: str, fields: dict[str, Any], kind: str,
                                                 expected: np.ndarray, labels: list[int] | None) -> None:
    source = open_source(spec_for(path, **fields), RunContext(base_dir=folder))
    try:
        assert source.layout == kind
        assert source.count == len(expected)
        np.testing.assert_allclose(source.gather(np.arange(source.count)), expected.astype(np.float32))
        if labels is None:
            assert source.labels is None
        else:
            assert source.labels is not None and source.labels.tolist() == labels
    finally:
        source.close()


def test_label_per_window_is_taken_as_is(folder: Path) -> None:
    with h5py.File(folder / "data.h5", "a") as f:
        f["window_labels"] = np.arange(6) * 10
    source = open_source(spec_for("data.h5", dataset="series", stride=3, labels="window_labels"),
                         RunContext(base_dir=folder))
    assert source.labels is not None and source.labels.tolist() == [0, 10, 20, 30, 40, 50]
    source.close()


def test_non_finite_windows_are_skipped_and_counted(folder: Path) -> None:
    series = SERIES.copy()
    series[5] = np.nan
    series[12] = np.inf
    series[16:] = 2.0  # the last window is constant
    np.save(folder / "gappy.npy", series)
    source = open_source(spec_for("gappy.npy"), RunContext(base_dir=folder))
    scan = source.scan(0, source.count)
    bad = {s for s in range(17) if 2 <= s <= 5 or 9 <= s <= 12}
    assert scan.valid.tolist() == [s for s in range(17) if s not in bad]
    assert scan.non_finite == len(bad)
    assert scan.constant == 1
    assert source.positions(scan.valid).tolist() == scan.valid.tolist()


def test_longer_rows_are_cut_to_seq_len_and_noted(folder: Path) -> None:
    source = open_source(spec_for("rows.npy"), RunContext(base_dir=folder))
    assert source.notes == {"rowsTruncatedFrom": 6}
    source.close()


@pytest.mark.parametrize(
    ("path", "fields", "where", "message"),
    [
        ("data.h5", {}, "spec.input.dataset", "name the one to render"),
        ("data.h5", {"dataset": "nope"}, "spec.input.dataset", "no dataset 'nope'"),
        ("data.h5", {"dataset": "text"}, "data.h5", "needs numbers"),
        ("data.h5", {"dataset": "cube"}, "data.h5", "expected 2-D rows or a 1-D series"),
        ("data.h5", {"dataset": "rows", "seqLen": 8}, "spec.seqLen", "fewer than seqLen"),
        ("data.h5", {"dataset": "series", "seqLen": 40}, "spec.seqLen", "not one window fits"),
        ("data.h5", {"dataset": "rows", "labels": "point_labels"}, "spec.input.labels", "must match"),
        ("data.h5", {"dataset": "series", "labels": "row_labels"}, "spec.input.labels", "one label per point"),
        ("data.h5", {"dataset": "rows", "labels": "missing"}, "spec.input.labels", "no labels dataset"),
        ("missing.h5", {}, "spec.input.path", "does not exist"),
        ("prices.csv", {"column": "volume"}, "spec.input.column", "no column 'volume'"),
        ("empty.npy", {}, "empty.npy", "empty"),
        ("complex.npy", {}, "complex.npy", "needs numbers"),
        ("strings.csv", {}, "strings.csv", "no numeric columns"),
        ("notes.txt", {}, "spec.input.format", "cannot tell the format"),
        ("garbage.h5", {}, "garbage.h5", "cannot open as HDF5"),
    ],
)
def test_bad_input_names_the_field_or_file(folder: Path, path: str, fields: dict[str, Any], where: str,
                                           message: str) -> None:
    np.save(folder / "empty.npy", np.array([], dtype=np.float32))
    np.save(folder / "complex.npy", np.ones(10, dtype=np.complex64))
    (folder / "strings.csv").write_text("name\nx\ny\n")
    (folder / "notes.txt").write_text("1 2 3")
    (folder / "garbage.h5").write_text("not hdf5")
    with pytest.raises(BadInput) as caught:
        open_source(spec_for(path, **fields), RunContext(base_dir=folder))
    assert where in str(caught.value) and message in str(caught.value)

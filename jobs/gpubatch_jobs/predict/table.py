"""Read the rows to label and check they form proper documents.

Input is a table (Parquet, CSV, or HDF5 with one 1-D dataset per column under
`input.dataset`, default the file's root): a document id column, a position
column and the feature columns. Rows of one document may be spread over the
file (they are grouped by id, documents keep the order of their first row),
but within a document the positions must strictly increase in file order.

Why unsorted positions are an error rather than silently sorted: the seed
ordered rows by the order they arrived in, so a file whose positions run
backwards was labelled wrongly without a word. An out-of-order or repeated
position usually means two files were concatenated or a join duplicated rows;
the error names the document, the position and the row so it can be fixed at
the source (or the file sorted by id then position).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.errors import BadInput, excerpt, excerpts

TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".h5": "hdf5", ".hdf5": "hdf5"}


@dataclass
class Documents:
    """Rows grouped by document, ordered by position; `order[i]` is the file row of grouped row i."""

    ids: np.ndarray  # per grouped row
    positions: np.ndarray  # per grouped row
    features: np.ndarray | None  # (n_rows, n_features) raw values, grouped order; None when `columns` has them
    order: np.ndarray  # int64 permutation: grouped row -> file row
    doc_starts: np.ndarray
    doc_lengths: np.ndarray
    # Per feature, the reader's buffers (Parquet row groups) in file order, used as they are when the
    # file is already in grouped order: no copy of the whole input is made.
    columns: list[list[np.ndarray]] | None = None

    def feature_columns(self, lo: int, hi: int) -> list[np.ndarray]:
        """Each feature's raw values for grouped rows [lo, hi), 1-D (views where the buffers allow)."""
        if self.columns is None:
            assert self.features is not None
            return [self.features[lo:hi, j] for j in range(self.features.shape[1])]
        out = []
        for parts in self.columns:
            pieces, offset = [], 0
            for part in parts:
                end = offset + len(part)
                if end > lo and offset < hi:
                    pieces.append(part[max(lo - offset, 0):min(hi, end) - offset])
                offset = end
                if offset >= hi:
                    break
            out.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
        return out

    @property
    def n_rows(self) -> int:
        return int(self.order.shape[0])

    @property
    def n_documents(self) -> int:
        return int(self.doc_starts.shape[0])


def table_format(path: Path, declared: str) -> str:
    if declared != "auto":
        if declared not in ("parquet", "csv", "hdf5"):
            raise BadInput(f"PredictJob reads parquet, csv or hdf5 tables, not {declared}", field="spec.input.format")
        return declared
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None and path.is_dir():
        fmt = "parquet"  # a folder of part files, as Spark writes them
    if fmt is None:
        raise BadInput(
            f"cannot tell the format of {path.name}; name it .parquet, .csv or .h5, or set spec.input.format",
            field="spec.input.format",
        )
    return fmt


def column_names(path: Path, fmt: str, dataset: str | None = None) -> set[str]:
    """The columns a table has, without reading its data."""
    if not path.exists():
        raise BadInput("input file not found", path=str(path))
    try:
        reader = {"parquet": _parquet, "csv": _csv}.get(fmt)
        available, _ = reader(path) if reader else _hdf5(path, dataset)
    except BadInput:
        raise
    except Exception as err:
        raise BadInput(f"cannot read the {fmt} file ({type(err).__name__}: {err})", path=str(path)) from err
    return set(available)


def check_columns(path: Path, available: set[str], columns: list[str]) -> None:
    """BadInput naming the columns the file lacks."""
    missing = [name for name in columns if name not in available]
    if missing:
        raise BadInput(
            f"columns {excerpts(missing)} are not in {path.name} (it has {excerpts(sorted(available))})",
            field="spec.input",
        )


def row_count(path: Path, fmt: str, dataset: str | None = None) -> int | None:
    """The table's row count from its metadata (Parquet footers, HDF5 shapes), None when only a full read tells."""
    try:
        if fmt == "parquet":
            import pyarrow.dataset as ds

            return int(ds.dataset(path, format="parquet").count_rows())
        if fmt == "hdf5":
            import h5py

            with h5py.File(path, "r") as handle:
                group = handle[dataset] if dataset else handle
                lengths = {item.shape[0] for item in group.values() if isinstance(item, h5py.Dataset) and item.ndim == 1}
            return lengths.pop() if len(lengths) == 1 else None
    except Exception:  # noqa: BLE001 - the full read reports what is wrong with the file
        return None
    return None


def read_columns(path: Path, fmt: str, columns: list[str], dataset: str | None = None,
                 chunked: bool = False) -> dict[str, Any]:
    """The named columns as numpy arrays; BadInput naming any column the file lacks.

    `chunked=True`: a Parquet column comes back as a list of numpy arrays (its
    row groups, zero-copy where Arrow allows) rather than one concatenated
    copy; other formats give a one-element list.
    """
    if not path.exists():
        raise BadInput("input file not found", path=str(path))
    try:
        if fmt == "parquet":
            available, read = _parquet(path)
        elif fmt == "csv":
            available, read = _csv(path)
        else:
            available, read = _hdf5(path, dataset)
    except BadInput:
        raise
    except Exception as err:
        raise BadInput(f"cannot read the {fmt} file ({type(err).__name__}: {err})", path=str(path)) from err
    check_columns(path, available, columns)
    try:
        if chunked and fmt == "parquet":
            return read(columns, chunked=True)  # type: ignore[no-any-return]
        out = read(columns)
        return {name: [values] for name, values in out.items()} if chunked else out  # type: ignore[no-any-return]
    except Exception as err:
        raise BadInput(f"cannot read columns from the {fmt} file ({type(err).__name__}: {excerpt(err, 120)})", path=str(path)) from err


def _parquet(path: Path):  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    dataset = pq.ParquetDataset(path)
    available = set(dataset.schema.names)

    def read(columns: list[str], chunked: bool = False) -> dict[str, Any]:
        table = dataset.read(columns=columns)
        if chunked:
            return {name: [chunk.to_numpy(zero_copy_only=False) for chunk in table.column(name).chunks]
                    for name in columns}
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in columns}

    return available, read


def _csv(path: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    available = set(pd.read_csv(path, nrows=0).columns)

    def read(columns: list[str]) -> dict[str, np.ndarray]:
        frame = pd.read_csv(path, usecols=columns)
        return {name: frame[name].to_numpy() for name in columns}

    return available, read


def _hdf5(path: Path, dataset: str | None):  # type: ignore[no-untyped-def]
    import h5py

    with h5py.File(path, "r") as handle:
        group = handle[dataset] if dataset else handle
        if not isinstance(group, h5py.Group):
            raise BadInput(f"{dataset} is not a group of column datasets", field="spec.input.dataset")
        available = {name for name, item in group.items() if isinstance(item, h5py.Dataset) and item.ndim == 1}

    def read(columns: list[str]) -> dict[str, np.ndarray]:
        with h5py.File(path, "r") as handle:
            group = handle[dataset] if dataset else handle
            out = {}
            for name in columns:
                values = group[name][()]
                if values.dtype.kind in "SO":
                    values = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
                out[name] = values
            return out

    return available, read


def group_documents(ids: np.ndarray, positions: np.ndarray | None, features: np.ndarray) -> Documents:
    """Group rows by document and check the positions; BadInput on nulls, repeats, disorder."""
    import pandas as pd

    n_rows = int(ids.shape[0])
    if n_rows == 0:
        raise BadInput("the input has no rows: nothing to predict", field="spec.input.path")
    if pd.isna(ids).any():
        row = int(np.flatnonzero(pd.isna(ids))[0])
        raise BadInput(f"row {row} has no document id; every row must belong to a document", field="spec.input.idColumn")
    codes, _ = pd.factorize(ids)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    grouped_codes = codes[order]
    boundaries = np.flatnonzero(np.diff(grouped_codes)) + 1
    doc_starts = np.concatenate([[0], boundaries]).astype(np.int64)
    doc_lengths = np.diff(np.concatenate([doc_starts, [n_rows]])).astype(np.int64)
    if positions is None:
        grouped_positions = np.arange(n_rows, dtype=np.int64) - np.repeat(doc_starts, doc_lengths)
    else:
        grouped_positions = _check_positions(ids, positions, order, grouped_codes)
    return Documents(
        ids=ids[order],
        positions=grouped_positions,
        features=features[order],
        order=order,
        doc_starts=doc_starts,
        doc_lengths=doc_lengths,
    )


def _check_positions(ids: np.ndarray, positions: np.ndarray, order: np.ndarray, codes: np.ndarray) -> np.ndarray:
    import pandas as pd

    if positions.dtype.kind not in "iuf":
        raise BadInput(f"positions must be numbers, got {positions.dtype}", field="spec.input.positionColumn")
    if pd.isna(positions).any():
        row = int(np.flatnonzero(pd.isna(positions))[0])
        raise BadInput(f"row {row} (document {ids[row]!r}) has no position", field="spec.input.positionColumn")
    grouped = positions[order]
    same_doc = codes[1:] == codes[:-1]
    # Repeats first (the more specific cause), found whatever the order.
    by_position = np.lexsort((grouped, codes))
    repeat = (codes[by_position][1:] == codes[by_position][:-1]) & (grouped[by_position][1:] == grouped[by_position][:-1])
    if repeat.any():
        at = order[by_position[int(np.flatnonzero(repeat)[0]) + 1]]
        raise BadInput(
            f"document {ids[at]!r} has position {_num(positions[at])} more than once (again at row {int(at)}); "
            "each row of a document needs its own position",
            field="spec.input.positionColumn",
        )
    backwards = same_doc & (grouped[1:] < grouped[:-1])
    if backwards.any():
        i = int(np.flatnonzero(backwards)[0]) + 1
        at = order[i]
        raise BadInput(
            f"document {ids[at]!r}: position {_num(grouped[i])} (row {int(at)}) comes after position "
            f"{_num(grouped[i - 1])}; positions must increase within a document: sort the input by id, then position",
            field="spec.input.positionColumn",
        )
    return grouped


def _num(value: object) -> object:
    number = float(value)  # type: ignore[arg-type]
    return int(number) if number.is_integer() else number

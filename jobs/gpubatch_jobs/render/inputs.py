"""Sequences to render, from HDF5, .npy/.npz, CSV or Parquet, with optional labels.

Two shapes of input, one image per *candidate*:
- rows: a 2-D array (HDF5 dataset, .npy, or a CSV/Parquet table whose numeric
  columns are the points of one sequence per row). Each row is one image of
  its first `seqLen` values; rows longer than `seqLen` are cut (counted in
  `rowsTruncatedFrom`), rows shorter are an error naming `spec.seqLen`.
- windows: a 1-D series (HDF5 1-D dataset, 1-D .npy, or `input.column` of a
  CSV/Parquet file, or a table with a single numeric column), cut into windows
  of `seqLen` points starting every `stride` points. A label per point gives
  each window the label of its last point; a label per window is taken as is.

Bad values are handled the same way for every format: a sequence containing
NaN or +-inf is skipped and counted (`skipped.nonFinite`); a constant sequence
is drawn as a flat line at mid-height and counted (`constantSequences`); empty
input, non-numeric data, a missing dataset or column, and labels of the wrong
length are `BadInput` errors naming the field or file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.errors import BadInput, excerpt, excerpts
from gpubatch_jobs.storage import object_store

SCAN_BLOCK = 65_536
_SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".npy": "npy", ".npz": "npz",
             ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Scan:
    """Which candidates of a range are rendered, and what was skipped."""

    valid: np.ndarray  # int64 candidate numbers, ascending
    non_finite: int = 0
    constant: int = 0


@dataclass
class Source:
    """Candidates 0..count-1, each a sequence of `seq_len` float32 values."""

    layout: str  # rows (one candidate a row) | windows (cut from one series)
    data: Any  # 2-D (rows) or 1-D (windows) array-like: numpy, memmap or h5py dataset
    seq_len: int
    stride: int
    description: str
    labels: np.ndarray | None = None  # per candidate
    notes: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # what the fingerprint covers
    _handles: list[Any] = field(default_factory=list)

    @property
    def count(self) -> int:
        if self.layout == "rows":
            return int(self.data.shape[0])
        return (int(self.data.shape[0]) - self.seq_len) // self.stride + 1

    def positions(self, candidates: np.ndarray) -> np.ndarray:
        """The index dataset: input row, or the window's first point in the series."""
        return candidates if self.layout == "rows" else candidates * self.stride

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Candidates [lo, hi) as float32 (hi - lo, seq_len); may hold non-finite values."""
        if self.layout == "rows":
            return np.asarray(self.data[lo:hi, : self.seq_len], dtype=np.float32)
        start, stop = lo * self.stride, (hi - 1) * self.stride + self.seq_len
        series = np.asarray(self.data[start:stop], dtype=np.float32)
        view = np.lib.stride_tricks.sliding_window_view(series, self.seq_len)[:: self.stride]
        return view[: hi - lo]

    def gather(self, candidates: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The sequences of the given (ascending) candidates, contiguous float32 (n, seq_len)."""
        if len(candidates) == 0:
            return np.empty((0, self.seq_len), dtype=np.float32)
        lo = int(candidates[0])
        block = self.read(lo, int(candidates[-1]) + 1)
        return np.take(block, candidates - lo, axis=0, out=out)

    def scan(self, lo: int, hi: int) -> Scan:
        """Finite, renderable candidates of [lo, hi), with counts of what was skipped."""
        valid: list[np.ndarray] = []
        non_finite = constant = 0
        for start in range(lo, hi, SCAN_BLOCK):
            stop = min(hi, start + SCAN_BLOCK)
            block = self.read(start, stop)
            finite = np.isfinite(block).all(axis=1)
            non_finite += int((~finite).sum())
            good = block[finite]
            constant += int((good.max(axis=1) == good.min(axis=1)).sum()) if len(good) else 0
            valid.append(np.flatnonzero(finite).astype(np.int64) + start)
        merged = np.concatenate(valid) if valid else np.empty(0, dtype=np.int64)
        return Scan(merged, non_finite, constant)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles.clear()


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BadInput(f"cannot tell the format of {path.name} from its extension; set spec.input.format "
                       "to hdf5, npy, npz, csv or parquet", field="spec.input.format")
    return fmt


def _check_numeric(array: Any, what: str, where: str) -> None:
    kind = np.dtype(array.dtype).kind
    if kind not in "iufb":
        raise BadInput(f"{what} has dtype {array.dtype}; rendering needs numbers (int or float)", path=where)


def _check_labels(labels: Any, what: str, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise BadInput(f"{what} must be 1-D (one label per sequence or per point), got shape {labels.shape}",
                       field="spec.input.labels")
    if labels.dtype.kind not in "iufb":
        raise BadInput(f"{what} has dtype {labels.dtype}; labels must be numbers (map classes to integers)",
                       path=where)
    return labels


def open_source(spec: Any, ctx: Any) -> Source:
    """The Source named by spec.input; BadInput when it cannot be rendered."""
    path = ctx.input_file(spec.input.path, field_name="spec.input.path")
    if not path.exists():
        raise BadInput(f"input file {path} does not exist", field="spec.input.path")
    fmt = detect_format(path, str(spec.input.format))
    stat = os.stat(path)
    # An object-store input's local copy keeps the object's time, and the URL stands for the path, so the
    # fingerprint (what makes a re-run skip finished parts) is the same from any scratch folder.
    identity = {"path": spec.input.path if object_store(spec.input.path) is not None else str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "input": spec.input.wire(), "format": fmt}
    loader = {"hdf5": _open_hdf5, "npy": _open_npy, "npz": _open_npz, "csv": _open_table,
              "parquet": _open_table}[fmt]
    source: Source = loader(spec, ctx, path, fmt)
    source.identity = identity
    try:
        _finish(source, spec, str(path))
    except BadInput:
        source.close()
        raise
    return source


def _from_array(array: Any, spec: Any, where: str, what: str) -> Source:
    _check_numeric(array, what, where)
    if array.ndim == 1:
        return Source("windows", array, spec.seq_len, spec.stride, f"{what}: series of {array.shape[0]} points")
    if array.ndim == 2:
        return Source("rows", array, spec.seq_len, spec.stride, f"{what}: {array.shape[0]} rows x {array.shape[1]}")
    raise BadInput(f"{what} has shape {array.shape}; expected 2-D rows or a 1-D series", path=where)


def _open_hdf5(spec: Any, ctx: Any, path: Path, fmt: str) -> Source:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise BadInput(f"cannot open as HDF5: {err}", path=str(path)) from err
    try:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        name = spec.input.dataset
        if name is None:
            candidates = [n for n in names if n != spec.input.labels and f[n].ndim in (1, 2)
                          and f[n].dtype.kind in "iuf"]
            if len(candidates) != 1:
                raise BadInput(f"{path.name} holds datasets {names or 'none'}; name the one to render "
                               "in spec.input.dataset", field="spec.input.dataset")
            name = candidates[0]
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise BadInput(f"{path.name} has no dataset {name!r}; it holds {names or 'no datasets'}",
                           field="spec.input.dataset")
        source = _from_array(f[name], spec, str(path), f"dataset {name!r}")
        if spec.input.labels:
            if spec.input.labels not in f:
                raise BadInput(f"{path.name} has no labels dataset {spec.input.labels!r}; it holds {names}",
                               field="spec.input.labels")
            source.labels = _check_labels(f[spec.input.labels][()], f"labels {spec.input.labels!r}", str(path))
    except BaseException:
        f.close()
        raise
    source._handles.append(f)
    return source


def _open_npy(spec: Any, ctx: Any, path: Path, fmt: str) -> Source:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise BadInput(f"cannot read as .npy: {err}", path=str(path)) from err
    source = _from_array(array, spec, str(path), path.name)
    if spec.input.labels:
        labels_path = ctx.input_file(spec.input.labels, field_name="spec.input.labels")
        if not labels_path.exists():
            raise BadInput(f"for .npy input, labels names a .npy file; {labels_path} does not exist",
                           field="spec.input.labels")
        source.labels = _check_labels(np.load(labels_path, allow_pickle=False), labels_path.name, str(labels_path))
    return source


def _open_npz(spec: Any, ctx: Any, path: Path, fmt: str) -> Source:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise BadInput(f"cannot read as .npz: {err}", path=str(path)) from err
    keys = list(archive.keys())
    name = spec.input.dataset or (keys[0] if len([k for k in keys if k != spec.input.labels]) == 1 else None)
    if name is None or name not in keys:
        raise BadInput(f"{path.name} holds arrays {keys}; name the one to render in spec.input.dataset",
                       field="spec.input.dataset")
    source = _from_array(archive[name], spec, str(path), f"array {name!r}")
    if spec.input.labels:
        if spec.input.labels not in keys:
            raise BadInput(f"{path.name} has no labels array {spec.input.labels!r}; it holds {keys}",
                           field="spec.input.labels")
        source.labels = _check_labels(archive[spec.input.labels], spec.input.labels, str(path))
    return source


def _open_table(spec: Any, ctx: Any, path: Path, fmt: str) -> Source:
    import pandas as pd

    try:
        frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as err:  # pandas raises many types for a malformed file
        raise BadInput(f"cannot read as {fmt}: {type(err).__name__}: {excerpt(err, 120)}", path=str(path)) from err
    labels_column = spec.input.labels
    for column in [spec.input.column, labels_column, *(spec.input.features or [])]:
        if column is not None and column not in frame.columns:
            raise BadInput(f"{path.name} has no column {excerpt(column)}; columns: {excerpts(frame.columns)}",
                           field="spec.input.column" if column == spec.input.column else
                           "spec.input.labels" if column == labels_column else "spec.input.features")
    if spec.input.column is not None:
        values = frame[spec.input.column]
        if not pd.api.types.is_numeric_dtype(values):
            raise BadInput(f"column {excerpt(spec.input.column)} is {values.dtype}, not numbers", path=str(path))
        source = _from_array(values.to_numpy(dtype=np.float64), spec, str(path), f"column {spec.input.column!r}")
    else:
        columns = spec.input.features or [c for c in frame.columns
                                          if c != labels_column and pd.api.types.is_numeric_dtype(frame[c])]
        bad = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad or not columns:
            raise BadInput(f"no numeric columns to render (non-numeric: {excerpts(bad)}); name one with spec.input.column",
                           path=str(path))
        table = frame[columns].to_numpy(dtype=np.float64)
        array = table[:, 0] if len(columns) == 1 else table
        source = _from_array(array, spec, str(path), f"columns {columns[:3]}{'...' if len(columns) > 3 else ''}")
    if labels_column is not None:
        source.labels = _check_labels(frame[labels_column].to_numpy(), f"column {labels_column!r}", str(path))
    return source


def _finish(source: Source, spec: Any, where: str) -> None:
    """Shape checks shared by every format, and labels aligned to candidates."""
    length = int(source.data.shape[0])
    if length == 0 or (source.layout == "rows" and source.data.shape[1] == 0):
        raise BadInput(f"{source.description}: the input is empty", path=where)
    if source.layout == "rows":
        width = int(source.data.shape[1])
        if width < spec.seq_len:
            raise BadInput(f"rows have {width} values, fewer than seqLen {spec.seq_len}; "
                           f"set spec.seqLen to at most {width}", field="spec.seqLen")
        if width > spec.seq_len:
            source.notes["rowsTruncatedFrom"] = width
    elif length < spec.seq_len:
        raise BadInput(f"the series has {length} points, fewer than seqLen {spec.seq_len}: not one window fits; "
                       f"set spec.seqLen to at most {length}", field="spec.seqLen")
    if source.labels is None:
        return
    labels, count = source.labels, source.count
    if source.layout == "rows" and len(labels) != count:
        raise BadInput(f"{len(labels)} labels for {count} rows; they must match", field="spec.input.labels")
    if source.layout == "windows":
        if len(labels) == length:  # one per point: a window gets its last point's label
            last = np.arange(count, dtype=np.int64) * source.stride + source.seq_len - 1
            source.labels = labels[last]
        elif len(labels) != count:
            raise BadInput(f"{len(labels)} labels for a series of {length} points ({count} windows); give one "
                           "label per point or one per window", field="spec.input.labels")

"""Read and check the rows a TrainJob learns from: CSV or Parquet, features and labels.

Every problem a user can fix in the data is a BadInput that names the column
(or the file) at fault: an empty file, a missing label column, a feature that
is not numeric, a NaN, a class seen only once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.errors import BadInput, excerpt, excerpts

log = logging.getLogger("gpubatch.train")

TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
ARRAY_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".npz": "npz", ".npy": "npy"}
DEFAULT_LABEL_COLUMN = "label"


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    found = TABLE_FORMATS.get(suffix) or ARRAY_FORMATS.get(suffix)
    if found is None:
        raise BadInput(
            f"cannot tell the format of {path.name!r} from its extension; set spec.input.format "
            "(csv, parquet, hdf5 or npz)",
            field="spec.input.format",
        )
    return found


def read_table(path: Path, fmt: str) -> Any:
    """A pandas DataFrame from a CSV or Parquet file, refusing missing or empty files."""
    import pandas as pd

    if not path.is_file():
        raise BadInput("file not found", path=str(path))
    try:
        frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError as err:
        raise BadInput("the file is empty", path=str(path)) from err
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise BadInput(f"cannot read it as {fmt}: {err}", path=str(path)) from err
    if len(frame) == 0:
        raise BadInput("the file has a header but no rows", path=str(path))
    return frame


@dataclass
class LabelledRows:
    """Numeric feature matrix and integer class ids, checked, in file order."""

    features: np.ndarray  # (rows, nFeatures) float64, finite
    class_ids: np.ndarray  # (rows,) int64
    feature_columns: list[str]
    label_column: str
    classes: list[str]
    ignored_columns: list[str] = field(default_factory=list)


def label_column_of(frame: Any, declared: str | None, path: Path) -> str:
    column = declared or DEFAULT_LABEL_COLUMN
    if column not in frame.columns:
        hint = "" if declared else " (spec.input.labels is unset, so the column 'label' was expected)"
        raise BadInput(
            f"label column {excerpt(column)} not found in {path.name}{hint}; columns are {excerpts(frame.columns)}",
            field="spec.input.labels",
        )
    return column


def _looks_numeric(series: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def feature_columns_of(frame: Any, declared: list[str] | None, exclude: set[str]) -> tuple[list[str], list[str]]:
    """(feature columns, ignored non-numeric columns). Declared columns must exist and be numeric."""
    import pandas as pd

    if declared:
        missing = [c for c in declared if c not in frame.columns]
        if missing:
            raise BadInput(f"feature column {excerpt(missing[0])} not found; columns are {excerpts(frame.columns)}",
                           field="spec.input.features")
        clash = [c for c in declared if c in exclude]
        if clash:
            raise BadInput(f"column {excerpt(clash[0])} is the label/id/position column and cannot also be a feature",
                           field="spec.input.features")
        for column in declared:
            if not _looks_numeric(frame[column]):
                raise BadInput(_non_numeric_message(frame[column], column), field="spec.input.features")
        return list(declared), []
    chosen, ignored = [], []
    for column in frame.columns:
        if column in exclude:
            continue
        series = frame[column]
        if _looks_numeric(series):
            chosen.append(str(column))
            continue
        # A text column that is mostly numbers is a broken feature, not a text column.
        parsed = pd.to_numeric(series, errors="coerce")
        if parsed.notna().mean() >= 0.5:
            raise BadInput(_non_numeric_message(series, column), field="spec.input.features")
        ignored.append(str(column))
    if not chosen:
        raise BadInput(
            f"no numeric feature columns; non-numeric columns {excerpts(ignored)} cannot be features "
            "(encode them as numbers, or list spec.input.features)",
            field="spec.input.features",
        )
    if ignored:
        log.warning("ignoring non-numeric columns %s (list spec.input.features to choose)", ignored)
    return chosen, ignored


def _non_numeric_message(series: Any, column: str) -> str:
    import pandas as pd

    parsed = pd.to_numeric(series, errors="coerce")
    offenders = series[parsed.isna() & series.notna()]
    example = excerpt(offenders.iloc[0], 20) if len(offenders) else "a non-numeric value"
    return f"feature column {excerpt(column)} is not numeric (e.g. {example}); encode it as numbers or drop it"


def feature_matrix(frame: Any, columns: list[str], path: Path) -> np.ndarray:
    values = frame[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        per_column = bad.sum(axis=0)
        index = int(np.argmax(per_column > 0))
        first_row = int(np.argmax(bad[:, index]))
        raise BadInput(
            f"feature column {excerpt(columns[index])} has {int(per_column[index])} NaN or infinite values "
            f"(first at row {first_row}); fill or drop those rows",
            field="spec.input.features",
        )
    return values


def encode_labels(raw: np.ndarray | Any, column: str, *, min_count: int = 2) -> tuple[np.ndarray, list[str]]:
    """(class ids, class names) with classes sorted numerically when all labels are numbers.

    Refuses missing labels, a single class, and a class with fewer than
    `min_count` samples (it could not be both learnt and validated).
    """
    import pandas as pd

    series = pd.Series(raw)
    if series.isna().any():
        first = int(np.argmax(series.isna().to_numpy()))
        raise BadInput(f"label column {excerpt(column)} has {int(series.isna().sum())} missing values (first at row {first})",
                       field="spec.input.labels")
    if series.dtype == object and len(series) and isinstance(series.iloc[0], bytes):
        series = series.map(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b)
    if pd.api.types.is_float_dtype(series) and np.all(np.mod(series.to_numpy(), 1) == 0):
        series = series.astype(np.int64)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        uniques = np.unique(series.to_numpy())
        classes = [str(v) for v in uniques]
        ids = np.searchsorted(uniques, series.to_numpy())
    else:
        text = series.astype(str).to_numpy()
        uniques = np.unique(text)
        classes = [str(v) for v in uniques]
        ids = np.searchsorted(uniques, text)
    if len(classes) < 2:
        raise BadInput(f"label column {excerpt(column)} has a single class {excerpt(classes[0], 20)}; a classifier needs two or more",
                       field="spec.input.labels")
    counts = np.bincount(ids, minlength=len(classes))
    rare = [classes[i] for i in np.flatnonzero(counts < min_count)]
    if rare:
        raise BadInput(
            f"class {excerpt(rare[0], 20)} in label column {excerpt(column)} has {int(counts[classes.index(rare[0])])} sample(s); "
            f"each class needs at least {min_count} (merge or drop rare classes)",
            field="spec.input.labels",
        )
    return ids.astype(np.int64), classes


def labelled_rows(frame: Any, *, label_column: str, declared_features: list[str] | None,
                  exclude: set[str], path: Path) -> LabelledRows:
    features, ignored = feature_columns_of(frame, declared_features, exclude | {label_column})
    matrix = feature_matrix(frame, features, path)
    ids, classes = encode_labels(frame[label_column].to_numpy(), label_column)
    return LabelledRows(matrix, ids, features, label_column, classes, ignored)

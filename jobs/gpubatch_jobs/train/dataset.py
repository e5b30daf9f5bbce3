"""Turn a TrainJob's input into model-ready training and validation arrays.

One entry point, `load_training_data`, dispatches on the model type:
dnn reads rows (CSV/Parquet, or a 2-D HDF5/npz array), rnn reads rows grouped
into documents and cut into windows (see gpubatch_jobs.artifacts for the
window contract), cnn reads images and labels from HDF5 or npz (the RenderJob
output). The preprocessing state fitted here is saved beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.artifacts import Preprocessing, window_starts
from gpubatch_jobs.errors import BadInput, excerpt, excerpts
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.train import arrays, tables
from gpubatch_jobs.train.split import (
    balanced_class_weights,
    document_split,
    fit_scaler,
    stratified_split,
)


@dataclass
class TrainingData:
    prep: Preprocessing
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    # Per-sample (dnn, cnn) or per-step (rnn) weights: class weights, 0 on padding.
    w_train: np.ndarray | None = None
    w_val: np.ndarray | None = None
    class_weights: list[float] | None = None
    input_rows: int = 0
    sample_unit: str = "rows"
    ignored_columns: list[str] = field(default_factory=list)
    documents: dict[str, int] | None = None
    mask_train: np.ndarray | None = None  # rnn: 1 on real steps, 0 on padding
    # rnn: (first row, rows) of each validation window, to merge overlapping windows per row.
    val_windows: np.ndarray | None = None
    val_labels: np.ndarray | None = None  # rnn: the class id of every row (indexed by row)

    @property
    def n_train(self) -> int:
        return int(len(self.x_train))

    @property
    def n_val(self) -> int:
        return int(len(self.x_val))

    def train_class_counts(self) -> dict[str, int]:
        """Training samples per class (rnn: real, unpadded time steps)."""
        labels = self.y_train if self.mask_train is None else self.y_train[self.mask_train > 0]
        counts = np.bincount(labels.ravel(), minlength=self.prep.n_classes)
        return {name: int(n) for name, n in zip(self.prep.classes, counts, strict=True)}


def load_training_data(spec: Any, ctx: RunContext) -> TrainingData:
    path = ctx.input_file(spec.input.path, field_name="spec.input.path")
    fmt = tables.detect_format(path, str(spec.input.format))
    model_type = spec.model.type
    if fmt == "npy":
        raise BadInput("a .npy file holds no labels; use CSV, Parquet, HDF5 or npz", field="spec.input.format")
    if model_type == "rnn":
        if fmt not in ("csv", "parquet"):
            raise BadInput("rnn training reads rows with a document id: use CSV or Parquet", field="spec.input.format")
        data = _sequences(spec, tables.read_table(path, fmt), path)
    elif model_type == "dnn" and fmt in ("csv", "parquet"):
        data = _tabular(spec, tables.read_table(path, fmt), path)
    elif model_type == "dnn":
        values, labels = arrays.read_arrays(path, fmt, spec.input.dataset, spec.input.labels, kind="features")
        data = _tabular_arrays(spec, values, labels, path)
    else:
        if fmt not in ("hdf5", "npz"):
            raise BadInput("cnn training reads images and labels from HDF5 (RenderJob output) or npz",
                           field="spec.input.format")
        images, labels = arrays.read_arrays(path, fmt, spec.input.dataset, spec.input.labels, kind="images")
        data = _images(spec, images, labels, path)
    data.prep.input_format = fmt
    data.prep.backend = spec.backend
    return data


def _weights_for(spec: Any, class_ids: np.ndarray, n_classes: int) -> np.ndarray | None:
    if spec.class_weight != "balanced":
        return None
    return balanced_class_weights(class_ids, n_classes)


def _tabular(spec: Any, frame: Any, path: Path) -> TrainingData:
    label = tables.label_column_of(frame, spec.input.labels, path)
    exclude = {c for c in (spec.input.id_column, spec.input.position_column) if c}
    rows = tables.labelled_rows(frame, label_column=label, declared_features=spec.input.features,
                                exclude=exclude, path=path)
    data = _split_rows(spec, rows.features, rows.class_ids, rows.feature_columns, label, rows.classes)
    data.ignored_columns = rows.ignored_columns
    data.prep.id_column = spec.input.id_column
    return data


def _tabular_arrays(spec: Any, values: np.ndarray, labels: np.ndarray, path: Path) -> TrainingData:
    if values.ndim != 2:
        raise BadInput(f"dnn features must be a 2-D array (rows, features), got shape {values.shape}",
                       field="spec.input.dataset")
    columns = [f"f{i}" for i in range(values.shape[1])]
    matrix = tables.feature_matrix(_frame(values, columns), columns, path)
    ids, classes = tables.encode_labels(labels, spec.input.labels or "labels")
    return _split_rows(spec, matrix, ids, columns, spec.input.labels or "labels", classes)


def _frame(values: np.ndarray, columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(values.astype(np.float64), columns=columns)


def _split_rows(spec: Any, matrix: np.ndarray, ids: np.ndarray, columns: list[str], label: str,
                classes: list[str]) -> TrainingData:
    train_idx, val_idx = stratified_split(ids, spec.validation_split, spec.seed)
    mean, scale = fit_scaler(matrix[train_idx])
    prep = Preprocessing(model_type="dnn", feature_columns=columns, label_column=label, classes=classes,
                         mean=mean, scale=scale)
    scaled = prep.transform(matrix)
    weights = _weights_for(spec, ids[train_idx], len(classes))
    return TrainingData(
        prep=prep,
        x_train=scaled[train_idx], y_train=ids[train_idx],
        x_val=scaled[val_idx], y_val=ids[val_idx],
        w_train=None if weights is None else weights[ids[train_idx]].astype(np.float32),
        class_weights=None if weights is None else [float(w) for w in weights],
        input_rows=len(ids),
    )


def _images(spec: Any, images: np.ndarray, labels: np.ndarray, path: Path) -> TrainingData:
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise BadInput(f"images must be (N, height, width), got shape {images.shape}", field="spec.input.dataset")
    height, width = int(images.shape[1]), int(images.shape[2])
    if spec.model.kernel_size > min(height, width):
        raise BadInput(f"kernelSize {spec.model.kernel_size} is larger than the {height}x{width} images",
                       field="spec.model.kernelSize")
    ids, classes = tables.encode_labels(labels, spec.input.labels or "labels")
    train_idx, val_idx = stratified_split(ids, spec.validation_split, spec.seed)
    prep = Preprocessing(model_type="cnn", label_column=spec.input.labels or "labels", classes=classes,
                         image_shape=[height, width], image_dataset=spec.input.dataset or "images")
    weights = _weights_for(spec, ids[train_idx], len(classes))
    return TrainingData(
        prep=prep,
        x_train=prep.transform(images[train_idx]), y_train=ids[train_idx],
        x_val=prep.transform(images[val_idx]), y_val=ids[val_idx],
        w_train=None if weights is None else weights[ids[train_idx]].astype(np.float32),
        class_weights=None if weights is None else [float(w) for w in weights],
        input_rows=len(ids),
        sample_unit="images",
    )


def _sequences(spec: Any, frame: Any, path: Path) -> TrainingData:
    id_column, position_column = spec.input.id_column, spec.input.position_column
    if not id_column:
        raise BadInput("rnn training needs the document id column: set spec.input.idColumn",
                       field="spec.input.idColumn")
    for name, column in (("idColumn", id_column), ("positionColumn", position_column)):
        if column and column not in frame.columns:
            raise BadInput(f"column {excerpt(column)} not found; columns are {excerpts(frame.columns)}",
                           field=f"spec.input.{name}")
        if column and frame[column].isna().any():
            raise BadInput(f"column {column!r} has missing values", field=f"spec.input.{name}")
    window = spec.model.window_size
    stride = spec.model.window_stride or max(1, window // 2)
    if stride > window:
        raise BadInput(f"windowStride ({stride}) must be <= windowSize ({window}), or rows between windows "
                       "are never learnt from", field="spec.model.windowStride")
    label = tables.label_column_of(frame, spec.input.labels, path)
    order = [id_column] + ([position_column] if position_column else [])
    frame = frame.sort_values(order, kind="stable")
    if position_column:
        _refuse_repeated_positions(frame, id_column, position_column)
    frame = frame.reset_index(drop=True)
    rows = tables.labelled_rows(frame, label_column=label, declared_features=spec.input.features,
                                exclude={id_column, position_column} - {None}, path=path)

    doc_values = frame[id_column].to_numpy()
    boundaries = np.flatnonzero(doc_values[1:] != doc_values[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(frame)]])
    spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
    longest = max(end - start for start, end in spans)
    if longest < window:
        raise BadInput(f"windowSize {window} is longer than every document (the longest has {longest} rows); "
                       f"set windowSize <= {longest}", field="spec.model.windowSize")

    train_spans, val_spans = document_split(spans, spec.validation_split, spec.seed)
    train_rows = np.concatenate([np.arange(s, e) for s, e in train_spans])
    mean, scale = fit_scaler(rows.features[train_rows])
    prep = Preprocessing(
        model_type="rnn", feature_columns=rows.feature_columns, label_column=label, classes=rows.classes,
        mean=mean, scale=scale, id_column=id_column, position_column=position_column,
        window_size=window, window_stride=stride,
    )
    scaled = prep.transform(rows.features)
    x_train, y_train, m_train, _ = cut_windows(scaled, rows.class_ids, train_spans, window, stride, prep.pad_value)
    x_val, y_val, m_val, val_plan = cut_windows(scaled, rows.class_ids, val_spans, window, stride, prep.pad_value)
    weights = _weights_for(spec, rows.class_ids[train_rows], len(rows.classes))
    w_train = m_train if weights is None else m_train * weights[y_train].astype(np.float32)
    return TrainingData(
        prep=prep, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        w_train=w_train, w_val=m_val, mask_train=m_train, val_windows=val_plan, val_labels=rows.class_ids,
        class_weights=None if weights is None else [float(w) for w in weights],
        input_rows=len(frame), sample_unit="windows", ignored_columns=rows.ignored_columns,
        documents={"train": len(train_spans), "validation": len(val_spans)},
    )


def _refuse_repeated_positions(frame: Any, id_column: str, position_column: str) -> None:
    """BadInput naming the document, the position and both rows when a document repeats a position.

    `frame` is sorted by (id, position) with its file row numbers as index. A
    repeated position is a duplicated row or two files joined; PredictJob
    refuses such input too, so training must not learn from it silently.
    """
    ids = frame[id_column].to_numpy()
    positions = frame[position_column].to_numpy()
    repeat = (ids[1:] == ids[:-1]) & (positions[1:] == positions[:-1])
    if repeat.any():
        i = int(np.flatnonzero(repeat)[0]) + 1
        rows = frame.index.to_numpy()
        first, again = sorted((int(rows[i - 1]), int(rows[i])))
        position = positions[i]
        shown = int(position) if float(position).is_integer() else position
        raise BadInput(
            f"document {ids[i]!r} has position {shown} more than once (rows {first} and {again}); "
            "each row of a document needs its own position: drop the duplicated rows",
            field="spec.input.positionColumn",
        )


def cut_windows(scaled: np.ndarray, class_ids: np.ndarray, spans: list[tuple[int, int]], window: int,
                stride: int, pad_value: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(windows, labels, mask, plan) for the documents in `spans`; padded steps have mask 0.

    `plan` holds each window's (first row, real rows)."""
    plan = [(start, offset, min(window, end - start - offset))
            for start, end in spans for offset in window_starts(end - start, window, stride)]
    n_features = scaled.shape[1]
    x = np.full((len(plan), window, n_features), pad_value, dtype=np.float32)
    y = np.zeros((len(plan), window), dtype=np.int64)
    mask = np.zeros((len(plan), window), dtype=np.float32)
    for k, (start, offset, length) in enumerate(plan):
        rows = slice(start + offset, start + offset + length)
        x[k, :length] = scaled[rows]
        y[k, :length] = class_ids[rows]
        mask[k, :length] = 1.0
    plan_array = np.array([(start + offset, length) for start, offset, length in plan], dtype=np.int64)
    return x, y, mask, plan_array.reshape(-1, 2)

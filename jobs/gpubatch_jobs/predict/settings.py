"""The job's effective settings: spec fields first, the artifact's saved values second.

Everything here is a runtime choice (window, stride, batch size, columns,
verbosity) that the seed kept inside the pickled model and changed by
poking attributes after loading; here the spec overrides the artifact
without retraining, and anything the model cannot take is a BadInput.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpubatch_jobs.errors import BadInput, excerpts
from gpubatch_jobs.predict.model import ArtifactInfo
from gpubatch_jobs.spec.kinds import PredictJobSpec

HDF5_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class PredictSettings:
    window: int
    stride: int
    batch: int | str  # "auto" or a size
    features: list[str]
    id_column: str
    position_column: str | None
    output_format: str  # parquet | hdf5
    verbosity: int
    chunk_rows: int | None = None  # rows per chunk of whole documents (None: predict.local.CHUNK_ROWS)


def resolve_settings(spec: PredictJobSpec, seq: ArtifactInfo, output: Path) -> PredictSettings:
    prep = seq.prep
    window = spec.window_size or seq.trained_window
    if window is None:
        raise BadInput("the artifact does not say its window size; set spec.windowSize", field="spec.windowSize")
    limit = seq.built_window or prep.window_size
    if limit is not None and window > limit:
        raise BadInput(
            f"windowSize {window} is larger than the {limit} rows the model was built for; "
            f"use windowSize <= {limit} or train a model with a larger window",
            field="spec.windowSize",
        )
    if seq.built_window is not None and window != seq.built_window:
        raise BadInput(
            f"the model's input is fixed at {seq.built_window} rows per window; use windowSize {seq.built_window}",
            field="spec.windowSize",
        )
    if spec.stride is not None:
        stride = spec.stride
    elif prep.window_stride and window == prep.window_size:
        stride = prep.window_stride
    else:
        stride = max(1, window // 2)
    if stride > window:
        raise BadInput(f"stride {stride} is larger than windowSize {window}: rows between windows get no prediction",
                       field="spec.stride")

    features = list(spec.input.features or prep.feature_columns)
    if len(features) != seq.n_features:
        raise BadInput(
            f"the model takes {seq.n_features} features but {len(features)} are named "
            f"({excerpts(features)}); list the {seq.n_features} training features "
            f"{excerpts(prep.feature_columns)} in spec.input.features or leave it empty",
            field="spec.input.features",
        )
    id_column = spec.input.id_column or prep.id_column
    if not id_column:
        raise BadInput("set spec.input.idColumn: the column naming each row's document", field="spec.input.idColumn")
    position_column = spec.input.position_column or prep.position_column

    fmt = spec.output.format
    if fmt == "auto":
        fmt = "hdf5" if output.suffix.lower() in HDF5_SUFFIXES else "parquet"
    return PredictSettings(
        window=window, stride=stride, batch=spec.batch_size, features=features, id_column=id_column,
        position_column=position_column, output_format=fmt, verbosity=spec.verbosity,
        chunk_rows=spec.chunk_rows,
    )

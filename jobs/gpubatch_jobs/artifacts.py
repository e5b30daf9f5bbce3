"""The TrainJob artifact: what TrainJob writes and PredictJob reads.

A TrainJob's `output.path` is a folder:

    model.keras            the trained Keras 3 model (backend-neutral file)
    preprocessing.json     `Preprocessing`: feature columns, classes, scaler, windows
    metrics.json           per-epoch history, final validation scores, device, samples/s
    training_curves.png    loss and accuracy per epoch
    summary.json           the summary the engine returned (also status.result)
    checkpoints/           resume state: latest.json -> epoch-NNNN/ (weights, optimizer)

`model.keras` is published last, by rename: its presence means every other
file is complete, so a reader that finds it may trust the folder. A run that
dies earlier leaves only `checkpoints/` and temporary `.name.partial-*` files,
never a finished-looking model.

Inputs by model type (`Preprocessing.transform` produces them):

- dnn: (batch, nFeatures) float32, standard-scaled with the saved mean/scale.
- cnn: (batch, H, W, 1) float32 in [0, 1] from (batch, H, W) uint8 images.
- rnn: (batch, windowSize, nFeatures) float32, scaled; the output is
  (batch, windowSize, nClasses), a softmax per time step (one class per row).
  Rows are sorted by `positionColumn` within each `idColumn` document and cut
  into windows of `windowSize` rows every `windowStride` rows, the last window
  aligned to the document's end (`window_starts`). There is NO Masking layer:
  masking knocks the LSTM/GRU off the cuDNN fast path. A document shorter than
  the window is padded after scaling with `padValue` (0.0, i.e. the feature
  mean); padded steps get sample weight 0 in training and the predictor drops
  their outputs. Overlapping windows are merged per row by the predictor.

Nothing heavy is imported at module level: `load_model` imports keras when
called, after the caller has chosen KERAS_BACKEND.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.errors import BadInput, excerpt, excerpts
from gpubatch_jobs.runtime import write_text_atomic

FORMAT_VERSION = 1

MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"

MODEL_TYPES = ("dnn", "rnn", "cnn")
TRANSFORM_BLOCK_ROWS = 1 << 15
COLUMN_BLOCK_ROWS = 1 << 12  # rows x features float64 gathered from columns: about 3 MB for 100 features


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass
class Preprocessing:
    """Everything needed to turn raw rows (or images) into model input, and back."""

    model_type: str
    backend: str = "tensorflow"
    feature_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    classes: list[str] = field(default_factory=list)  # index = class id
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    id_column: str | None = None
    position_column: str | None = None
    window_size: int | None = None
    window_stride: int | None = None
    input_format: str = "auto"
    image_shape: list[int] | None = None  # cnn: [H, W] of the training images
    image_dataset: str | None = None  # cnn: HDF5 dataset of the images
    pad_value: float = 0.0
    format_version: int = FORMAT_VERSION

    # -- serialisation -------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {_camel(key): value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, payload: dict[str, Any] | str) -> Preprocessing:
        data = json.loads(payload) if isinstance(payload, str) else dict(payload)
        known = {_camel(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        kwargs = {known[key]: value for key, value in data.items()}
        prep = cls(**kwargs)
        if prep.format_version > FORMAT_VERSION:
            raise ValueError(
                f"formatVersion {prep.format_version} is newer than this gpubatch understands ({FORMAT_VERSION})"
            )
        if prep.model_type not in MODEL_TYPES:
            raise ValueError(f"modelType {prep.model_type!r} is not one of {', '.join(MODEL_TYPES)}")
        if prep.model_type != "cnn" and len(prep.mean) != len(prep.feature_columns):
            raise ValueError("mean and featureColumns differ in length")
        return prep

    def save(self, folder: Path) -> Path:
        path = Path(folder) / PREPROCESSING_FILE
        write_text_atomic(path, json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def load(cls, folder: Path) -> Preprocessing:
        path = artifact_folder(folder) / PREPROCESSING_FILE
        if not path.is_file():
            raise BadInput(
                f"no {PREPROCESSING_FILE} here; is this the output folder of a finished TrainJob?",
                path=str(path),
            )
        try:
            return cls.from_json(path.read_text())
        except (ValueError, TypeError) as err:
            raise BadInput(f"corrupt {PREPROCESSING_FILE}: {err}", path=str(path)) from err

    # -- model input ---------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.feature_columns)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def transform(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Scale raw features (dnn/rnn: (..., nFeatures)) or images (cnn: (N, H, W)) to model input.

        Raises BadInput naming the column when a value is NaN or infinite;
        callers that know the file may re-raise with `path=`. `out` (dnn/rnn):
        a float32 array of the result's shape to write into instead of a new one.
        """
        if self.model_type == "cnn":
            return self._transform_images(features)
        values = np.asarray(features)
        if values.dtype.kind not in "fiub":
            values = values.astype(np.float64)
        if values.shape[-1] != self.n_features:
            raise BadInput(
                f"expected {self.n_features} feature columns {excerpts(self.feature_columns)}, got {values.shape[-1]}",
                field="spec.input.features",
            )
        self.check_finite(values)
        mean = np.asarray(self.mean, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        # Computed in float64, stored as float32, in blocks of rows: the same numbers as one
        # expression over the whole array, without float64 temporaries of the whole input.
        if out is None:
            out = np.empty(values.shape, dtype=np.float32)
        elif out.shape != values.shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {values.shape}, got {out.dtype} {out.shape}")
        flat_in, flat_out = values.reshape(-1, self.n_features), out.reshape(-1, self.n_features)
        for lo in range(0, flat_in.shape[0], TRANSFORM_BLOCK_ROWS):
            hi = lo + TRANSFORM_BLOCK_ROWS
            flat_out[lo:hi] = (flat_in[lo:hi].astype(np.float64) - mean) / scale
        return out

    def check_finite(self, values: np.ndarray, names: list[str] | None = None) -> None:
        """BadInput naming the first feature column with NaN or infinite values."""
        names = names or self.feature_columns
        # Fast path: a column's float64 sum is finite unless the column holds a NaN or an infinity
        # (or, for float64 input near 1e308, overflows; the exact check below settles that).
        sums = np.asarray(values).reshape(-1, values.shape[-1]).sum(axis=0, dtype=np.float64)
        if np.isfinite(sums).all():
            return
        bad = ~np.isfinite(values)
        if bad.any():
            per_column = bad.reshape(-1, values.shape[-1]).sum(axis=0)
            index = int(np.argmax(per_column > 0))
            column = names[index] if index < len(names) else f"#{index}"
            raise _not_finite(column, int(per_column[index]))

    @staticmethod
    def check_finite_columns(columns: dict[str, list[np.ndarray]]) -> None:
        """`check_finite` for columns given as lists of 1-D parts (a Parquet column's row groups)."""
        for name, parts in columns.items():
            if all(np.isfinite(part.sum(dtype=np.float64)) for part in parts):
                continue
            count = sum(int((~np.isfinite(part)).sum()) for part in parts)
            if count:
                raise _not_finite(name, count)

    def transform_columns(self, columns: list[np.ndarray], out: np.ndarray) -> np.ndarray:
        """`transform` of dnn/rnn rows given column by column (1-D, one per feature), into `out` (n, nFeatures).

        The same float64 arithmetic as `transform`, in blocks of rows small
        enough to stay in cache; values must have passed `check_finite*`.
        """
        if len(columns) != self.n_features:
            raise BadInput(f"expected {self.n_features} feature columns {excerpts(self.feature_columns)}, got {len(columns)}",
                           field="spec.input.features")
        mean = np.asarray(self.mean, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        n = out.shape[0]
        block = np.empty((min(n, COLUMN_BLOCK_ROWS), self.n_features), dtype=np.float64)
        for lo in range(0, n, COLUMN_BLOCK_ROWS):
            hi = min(lo + COLUMN_BLOCK_ROWS, n)
            rows = block[:hi - lo]
            for j, column in enumerate(columns):
                rows[:, j] = column[lo:hi]
            rows -= mean
            rows /= scale
            out[lo:hi] = rows
        return out

    def _transform_images(self, images: np.ndarray) -> np.ndarray:
        array = np.asarray(images)
        if array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            raise BadInput(f"images must be (N, height, width), got shape {array.shape}", field="spec.input.dataset")
        if self.image_shape is not None and list(array.shape[1:]) != list(self.image_shape):
            raise BadInput(
                f"images are {array.shape[1]}x{array.shape[2]} but the model was trained on "
                f"{self.image_shape[0]}x{self.image_shape[1]}",
                field="spec.input.dataset",
            )
        scaled = array.astype(np.float32)
        if array.dtype == np.uint8:
            scaled /= 255.0
        if not np.isfinite(scaled).all():
            raise BadInput("images contain NaN or infinite values", field="spec.input.dataset")
        return scaled[..., None]

    def class_names(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids (as the model's argmax gives them) to label strings."""
        return np.asarray(self.classes, dtype=object)[np.asarray(class_ids, dtype=np.int64)]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start rows of the windows over a document of `length` rows.

    Every `stride` rows, plus one window aligned to the end so the last rows
    are covered; a document no longer than the window gets a single window at
    0 (padded by the caller). Shared by training and prediction.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def artifact_folder(folder: Path, field: str = "spec.model") -> Path:
    """The artifact folder itself; BadInput with the fix when it is missing or names a file inside it."""
    folder = Path(folder)
    if folder.is_file():
        hint = (f"set {field} to its folder {folder.parent}" if folder.name in (MODEL_FILE, PREPROCESSING_FILE)
                else f"{field} must be the output folder of a TrainJob (holding {MODEL_FILE} and {PREPROCESSING_FILE})")
        what = "the model file" if folder.suffix == ".keras" else "a file, not a folder"
        raise BadInput(f"{folder} is {what}; {hint}", field=field)
    if not folder.exists():
        raise BadInput("model folder not found; spec.model must be the output folder of a TrainJob", path=str(folder))
    return folder


def _corrupt_model(path: Path, why: str) -> BadInput:
    return BadInput(
        f"not a readable .keras file ({why}); the file is damaged or was not written by Keras 3: "
        "re-run the TrainJob, or copy the artifact folder again",
        path=str(path),
    )


def model_input_shape(folder: Path) -> tuple[int | None, ...] | None:
    """The model's input shape from the config inside `model.keras`, read without Keras.

    Raises BadInput when the file is missing, not a zip or has no readable
    config (the checks Keras would make, minus its import); None when the
    config does not state one input shape.
    """
    path = Path(folder) / MODEL_FILE
    _require_model_file(path)
    try:
        with zipfile.ZipFile(path) as handle:
            config = json.loads(handle.read("config.json"))
    except zipfile.BadZipFile as err:
        raise _corrupt_model(path, f"not a zip archive: {err}") from None
    except KeyError:
        raise _corrupt_model(path, "the archive has no config.json") from None
    except (OSError, ValueError) as err:
        raise _corrupt_model(path, f"{type(err).__name__}: {err}") from None
    try:
        layers = config["config"]["layers"]
        inputs = [layer["config"] for layer in layers if layer.get("class_name") == "InputLayer"]
        if len(inputs) != 1:
            return None
        shape = inputs[0].get("batch_shape") or inputs[0].get("batch_input_shape")
        return None if shape is None else tuple(None if d is None else int(d) for d in shape)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _require_model_file(path: Path) -> None:
    if not path.is_file():
        raise BadInput(
            f"no {MODEL_FILE}: the folder is not a finished TrainJob artifact "
            "(training still running, failed, or the wrong path)",
            path=str(path),
        )


def is_finished(folder: Path) -> bool:
    """True when the folder holds a published model (model.keras is renamed in last)."""
    return (Path(folder) / MODEL_FILE).is_file() and (Path(folder) / PREPROCESSING_FILE).is_file()


def load_model(folder: Path) -> Any:
    """Load `model.keras` from an artifact folder (inference only, not compiled).

    Call after KERAS_BACKEND is set: this imports keras. Raises BadInput with
    the path when the file is missing or cannot be read.
    """
    path = artifact_folder(folder) / MODEL_FILE
    _require_model_file(path)
    if not zipfile.is_zipfile(path):
        # Keras would say "File not found ... ensure the file is an accessible .keras zip file".
        raise _corrupt_model(path, "not a zip archive")
    from gpubatch_jobs.quiet import import_keras

    keras = import_keras()
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # keras raises many kinds for a damaged zip/h5
        raise _corrupt_model(path, f"Keras could not load it: {type(err).__name__}: {err}") from err


def load_artifact(folder: Path) -> tuple[Any, Preprocessing]:
    """(model, preprocessing) from a finished TrainJob output folder."""
    prep = Preprocessing.load(folder)
    model = load_model(folder)
    return model, prep


def read_metrics(folder: Path) -> dict[str, Any]:
    path = Path(folder) / METRICS_FILE
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot read {METRICS_FILE}: {err}", path=str(path)) from err


__all__ = [
    "CHECKPOINT_DIR",
    "CURVES_FILE",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "MODEL_FILE",
    "PREPROCESSING_FILE",
    "SUMMARY_FILE",
    "Preprocessing",
    "artifact_folder",
    "is_finished",
    "load_artifact",
    "load_model",
    "model_input_shape",
    "read_metrics",
    "window_starts",
]


def _not_finite(column: str, count: int) -> BadInput:
    return BadInput(f"column {excerpt(column)} has {count} NaN or infinite values; fill or drop those rows first",
                    field="spec.input.features")

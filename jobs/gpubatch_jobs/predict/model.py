"""Load a TrainJob artifact for prediction and check it is a sequence labeller.

The artifact's `model.keras` and `preprocessing.json` come from
`gpubatch_jobs.artifacts`; this module adds what prediction needs on top: the
window length the model was built for, its feature and class counts, and
clear errors when they do not fit the job.

Two steps, so that bad input fails in a second rather than after Keras'
import: `inspect_artifact` reads preprocessing.json and the model's config
(a JSON member of the `model.keras` zip) without importing any framework;
`load_sequence_model` loads the model itself and checks what only the loaded
model can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubatch_jobs.artifacts import (
    MODEL_FILE,
    Preprocessing,
    artifact_folder,
    load_model,
    model_input_shape,
)
from gpubatch_jobs.errors import BadInput


@dataclass
class ArtifactInfo:
    """What an rnn artifact says about itself, read without importing a framework."""

    prep: Preprocessing
    folder: Path
    built_window: int | None  # the model's fixed time dimension, None when any length works
    n_features: int
    n_classes: int

    @property
    def trained_window(self) -> int | None:
        return self.prep.window_size or self.built_window


@dataclass
class SequenceModel(ArtifactInfo):
    model: Any


def inspect_artifact(folder: Path) -> ArtifactInfo:
    """preprocessing.json and the model's input shape; BadInput naming the file when unusable. No imports."""
    folder = artifact_folder(folder, field="spec.model")
    prep = Preprocessing.load(folder)
    if prep.model_type != "rnn":
        raise BadInput(
            f"PredictJob labels rows of documents with an rnn model; this artifact holds a {prep.model_type} model",
            field="spec.model",
        )
    shape = model_input_shape(folder)  # also refuses a missing or corrupt model.keras
    built = None
    n_features = prep.n_features
    if shape is not None and len(shape) == 3:
        built = None if shape[1] is None else int(shape[1])
        if shape[2] is not None and int(shape[2]) != prep.n_features:
            raise BadInput(
                f"the model takes {int(shape[2])} features but preprocessing.json lists {prep.n_features}; "
                "the artifact is inconsistent, re-run the TrainJob",
                path=str(folder / MODEL_FILE),
            )
    return ArtifactInfo(prep=prep, folder=folder, built_window=built, n_features=n_features, n_classes=prep.n_classes)


def load_sequence_model(folder: Path | ArtifactInfo) -> SequenceModel:
    """The model and preprocessing of an rnn artifact; BadInput naming the file when unusable."""
    info = folder if isinstance(folder, ArtifactInfo) else inspect_artifact(folder)
    folder, prep = info.folder, info.prep
    model = load_model(folder)
    model_file = str(folder / MODEL_FILE)
    input_shape = _single(model.input_shape)
    output_shape = _single(model.output_shape)
    if len(input_shape) != 3 or len(output_shape) != 3:
        raise BadInput(
            f"expected a model from (batch, window, features) to (batch, window, classes), got "
            f"{input_shape} -> {output_shape}",
            path=model_file,
        )
    n_features, n_classes = int(input_shape[2]), int(output_shape[2])
    if n_features != prep.n_features:
        raise BadInput(
            f"the model takes {n_features} features but preprocessing.json lists {prep.n_features}; "
            "the artifact is inconsistent, re-run the TrainJob",
            path=model_file,
        )
    if n_classes != prep.n_classes:
        raise BadInput(
            f"the model outputs {n_classes} classes but preprocessing.json lists {prep.n_classes}",
            path=model_file,
        )
    built = input_shape[1]
    return SequenceModel(model=model, prep=prep, folder=folder, built_window=None if built is None else int(built),
                         n_features=n_features, n_classes=n_classes)


def _single(shape: Any) -> tuple[Any, ...]:
    if isinstance(shape, list):
        if len(shape) != 1:
            raise BadInput(f"expected a model with one input and one output, got {len(shape)}", field="spec.model")
        shape = shape[0]
    return tuple(shape)

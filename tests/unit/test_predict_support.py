"""Helpers shared by the PredictJob tests (no tests here): a tiny rnn artifact, inputs, a naive reference.

The artifact is built with Keras directly and saved through the artifact
contract (`gpubatch_jobs.artifacts.Preprocessing`), exactly as TrainJob
publishes it. The reference predicts one window at a time and averages with
plain Python loops: the behaviour the engine must reproduce.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from gpubatch_jobs.artifacts import Preprocessing, window_starts

WINDOW, N_FEATURES, CLASSES = 6, 3, ["a", "b", "c"]
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
LENGTHS = [1, 4, 6, 7, 13, 20, 31]


def make_artifact(folder: Path, *, window: int | None = WINDOW, stride: int = 3, seed: int = 0) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((window, N_FEATURES))
    hidden = keras.layers.LSTM(8, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(hidden)
    folder.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    Preprocessing(
        model_type="rnn", feature_columns=FEATURES, classes=CLASSES, mean=[0.5, -1.0, 0.0], scale=[2.0, 1.0, 0.5],
        id_column="doc", position_column="pos", window_size=window or WINDOW, window_stride=stride,
    ).save(folder)
    return folder


def make_rows(lengths: list[int] = LENGTHS, seed: int = 1, shuffle_docs: bool = True) -> pd.DataFrame:
    """Documents with gaps in their positions; rows of different documents interleaved."""
    rng = np.random.default_rng(seed)
    frames = []
    for index, length in enumerate(lengths):
        positions = np.cumsum(rng.integers(1, 4, size=length)) * 10
        frame = pd.DataFrame(rng.normal(size=(length, N_FEATURES)), columns=FEATURES)
        frame.insert(0, "pos", positions)
        frame.insert(0, "doc", f"doc-{index}")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if shuffle_docs:
        table = _interleave(table)
    return table.reset_index(drop=True)


def _interleave(table: pd.DataFrame) -> pd.DataFrame:
    """A shuffle that keeps every document's positions increasing in file order."""
    table = table.copy()
    table["_rank"] = table.groupby("doc")["pos"].rank(method="first")
    offsets = table["doc"].map({doc: i / (2 * table["doc"].nunique()) for i, doc in enumerate(table["doc"].unique()[::-1])})
    table["_key"] = table["_rank"] + offsets
    return table.sort_values("_key").drop(columns=["_rank", "_key"])


def naive_predictions(folder: Path, table: pd.DataFrame, window: int, stride: int) -> pd.DataFrame:
    """One model call per window, Python loops to average: the reference the engine must match."""
    import keras

    model = keras.saving.load_model(folder / "model.keras", compile=False)
    prep = Preprocessing.load(folder)
    sums: dict[tuple[str, int], np.ndarray] = {}
    counts: dict[tuple[str, int], int] = {}
    for doc, rows in table.groupby("doc", sort=False):
        rows = rows.sort_values("pos")
        values = prep.transform(rows[FEATURES].to_numpy())
        positions = rows["pos"].tolist()
        for start in window_starts(len(rows), window, stride):
            chunk = values[start:start + window]
            padded = np.zeros((window, N_FEATURES), np.float32)
            padded[: len(chunk)] = chunk
            out = np.asarray(model(padded[None], training=False))[0]
            for step in range(len(chunk)):
                key = (doc, positions[start + step])
                sums[key] = sums.get(key, 0) + out[step].astype(np.float64)
                counts[key] = counts.get(key, 0) + 1
    records = [(doc, pos, *(sums[(doc, pos)] / counts[(doc, pos)])) for doc, pos in sums]
    return pd.DataFrame(records, columns=["doc", "pos", *[f"p_{c}" for c in CLASSES]])

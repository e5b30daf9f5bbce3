"""The seed's way of predicting, kept as the baseline the PredictJob engine must beat.

Written the way the seed's users did it (docs 000 and 003 in shared/seeds):
per document, rows sorted by position, windows cut in Python, one
`model.predict()` per `prediction_batch_size` (64) windows, and overlapping
predictions averaged with per-row Python loops. Same windows, same scaling,
same padding as the engine, so outputs must agree within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpubatch_jobs.artifacts import window_starts


def seed_predict(model, prep, table: pd.DataFrame, window: int, stride: int,
                 prediction_batch_size: int = 64) -> pd.DataFrame:
    id_column, position_column = prep.id_column, prep.position_column
    out_frames = []
    for doc_id, rows in table.groupby(id_column, sort=False):
        rows = rows.sort_values(position_column)
        values = prep.transform(rows[prep.feature_columns].to_numpy())
        windows, spans = [], []
        for start in window_starts(len(rows), window, stride):
            chunk = values[start:start + window]
            padded = np.zeros((window, values.shape[1]), dtype=np.float32)
            padded[: len(chunk)] = chunk
            windows.append(padded)
            spans.append((start, len(chunk)))
        predictions = []
        for i in range(0, len(windows), prediction_batch_size):
            predictions.extend(model.predict(np.array(windows[i:i + prediction_batch_size]), verbose=0))
        sums = [np.zeros(prep.n_classes) for _ in range(len(rows))]
        counts = [0] * len(rows)
        for (start, valid), prediction in zip(spans, predictions, strict=True):
            for step in range(valid):
                sums[start + step] += prediction[step]
                counts[start + step] += 1
        probabilities = np.array([s / c for s, c in zip(sums, counts, strict=True)])
        frame = pd.DataFrame({id_column: doc_id, position_column: rows[position_column].to_numpy(),
                              "label": np.asarray(prep.classes)[probabilities.argmax(axis=1)]})
        for index, name in enumerate(prep.classes):
            frame[f"p_{name}"] = probabilities[:, index]
        out_frames.append(frame)
    return pd.concat(out_frames, ignore_index=True)

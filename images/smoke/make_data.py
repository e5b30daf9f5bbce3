"""Tiny inputs for the image smoke test (images/smoke.sh), generated offline.

    python make_data.py DIR

DIR/series.h5   a 1-D random-walk series `close` with a `labels` per point (RenderJob)
DIR/rows.parquet sequence rows: `doc`, `pos`, four features and a `label` (TrainJob rnn, PredictJob)
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)

    close = 100 + np.cumsum(rng.normal(size=96)).astype("float32")
    with h5py.File(out / "series.h5", "w") as h5:
        h5["close"] = close
        h5["labels"] = (np.diff(close, append=close[-1]) > 0).astype("int8")

    frames = []
    for doc in range(6):
        features = rng.normal(size=(40, 4)).astype("float32")
        frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(4)])
        frame.insert(0, "pos", np.arange(40))
        frame.insert(0, "doc", f"doc-{doc}")
        # A label the model can learn from its own row: the sign of the first feature.
        frame["label"] = np.where(features[:, 0] > 0, "up", "down")
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(out / "rows.parquet", index=False)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_data.py DIR")
    main(sys.argv[1])

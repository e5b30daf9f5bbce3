"""The seed's way as a whole process, for bench/predict.py: what a user of the seed's script waits for.

    python bench/seed_process.py MODEL_DIR ROWS.parquet OUT.parquet WINDOW STRIDE

Imports TensorFlow and Keras (as the seed's scripts did; standalone Keras when
KERAS_BACKEND is torch or jax), loads the model,
reads the rows with pandas, predicts with `seed_predict` (one
`model.predict()` per 64 windows, Python loops), writes Parquet, and prints a
JSON line with the seconds of each stage. The parent times the process from
outside (interpreter start to exit).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

started = time.perf_counter()


def main() -> int:
    model_dir, rows, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    window, stride = int(sys.argv[4]), int(sys.argv[5])
    stages: dict[str, float] = {}
    mark = time.perf_counter()
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf  # noqa: F401  (the seed imported it first thing)
        from tensorflow import keras
    else:  # the same script on Keras 3's torch or JAX backend (where TensorFlow is not installed)
        import keras  # type: ignore[no-redef]

    stages["importSeconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    from gpubatch_jobs.artifacts import MODEL_FILE, Preprocessing

    model = keras.models.load_model(model_dir / MODEL_FILE, compile=False)
    prep = Preprocessing.load(model_dir)
    stages["loadSeconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    import pandas as pd

    table = pd.read_parquet(rows)
    stages["readSeconds"] = time.perf_counter() - mark
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_predict import seed_predict

    from gpubatch_jobs.artifacts import window_starts

    windows = sum(len(window_starts(len(g), window, stride)) for _, g in table.groupby(prep.id_column, sort=False))
    mark = time.perf_counter()
    frame = seed_predict(model, prep, table, window, stride)
    stages["modelSeconds"] = time.perf_counter() - mark
    mark = time.perf_counter()
    frame.to_parquet(out, index=False)
    stages["writeSeconds"] = time.perf_counter() - mark
    stages["inProcessSeconds"] = time.perf_counter() - started
    print(json.dumps({"windows": windows, **{k: round(v, 3) for k, v in stages.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PredictJob benchmark: windows/s of the seed's way against the engine (local, and Spark).

    .venv/bin/python bench/predict.py                        # CPU, LSTM 2x128, window 50, 100 features
    .venv/bin/python bench/predict.py --spark                # also engine: spark (local[*])
    python bench/predict.py --backend torch --device gpu --docs 2000   # the H100 run

Same model (a fresh LSTM 2x128 saved as a TrainJob artifact, or --model
FOLDER), same documents, same machine, one run. Prints windows/s for each
way, the ratios, and the largest difference between outputs (must be < 1e-5).
The seed's way runs on a subset of documents (--seed-docs) when it would
take too long; windows/s are compared, outputs on the shared documents.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "torch", "jax"])
    parser.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    parser.add_argument("--model", help="a TrainJob rnn artifact folder (default: a fresh LSTM 2x128)")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--stride", type=int, default=25)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--docs", type=int, default=120, help="documents (about 1,000 rows each)")
    parser.add_argument("--seed-docs", type=int, default=60, help="documents the seed's way runs on")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--spark", action="store_true", help="also run engine: spark")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()

    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    import pandas as pd

    from gpubatch_jobs.contract import instruction_for_policy
    from gpubatch_jobs.predict import run
    from gpubatch_jobs.runtime import RunContext
    from gpubatch_jobs.spec.kinds import PredictJobSpec

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    model_dir = Path(args.model) if args.model else make_model(work / "model", args)
    table = make_documents(args, model_dir)
    table.to_parquet(work / "rows.parquet", index=False)
    n_rows = len(table)
    print(f"data: {args.docs} documents, {n_rows} rows, window {args.window}, stride {args.stride}, "
          f"{args.features} features, backend {args.backend}")

    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    body = {"model": str(model_dir), "input": {"path": "rows.parquet"}, "output": {"path": "ours.parquet"},
            "windowSize": args.window, "stride": args.stride, "batchSize": batch}
    started = time.perf_counter()
    ours = run(PredictJobSpec.model_validate(body), RunContext(base_dir=work, instruction=instruction_for_policy(args.device)))
    ours_wall = time.perf_counter() - started
    windows = ours["items"]["windows"]
    figures = {"windows": windows, "rows": n_rows, "device": ours["device"], "backend": ours["backend"],
               "batchSize": ours["batchSize"], "ours": {
                   "windowsPerSecond": round(windows / ours["modelSeconds"], 1) if "modelSeconds" in ours
                   else ours["windowsPerSecond"],
                   "windowsPerSecondEndToEnd": round(windows / ours_wall, 1), "seconds": round(ours_wall, 2)}}
    figures["ours"]["windowsPerSecond"] = ours["windowsPerSecond"]
    print(f"ours (local):   {ours['windowsPerSecond']:>10,.0f} windows/s in the model loop, "
          f"{windows / ours_wall:>10,.0f} windows/s end to end (load, read, probe, write), "
          f"batch {ours['batchSize']}, {ours['device']}")

    seed_figures, seed_frame = run_seed(model_dir, table, args)
    figures["seed"] = seed_figures
    print(f"seed's way:     {seed_figures['windowsPerSecond']:>10,.0f} windows/s "
          f"(model.predict per 64 windows, {seed_figures['windows']} windows)")
    got = pd.read_parquet(work / "ours.parquet")
    merged = got.merge(seed_frame, on=["doc", "pos"], suffixes=("", "_seed"))
    probability_columns = [c for c in got.columns if c.startswith("p_")]
    diff = max(float(np.abs(merged[c] - merged[c + "_seed"]).max()) for c in probability_columns)
    figures["maxAbsDiff"] = diff
    figures["labelsEqual"] = bool((merged["label"] == merged["label_seed"]).all())
    figures["speedupModelLoop"] = round(ours["windowsPerSecond"] / seed_figures["windowsPerSecond"], 2)
    figures["speedupEndToEnd"] = round((windows / ours_wall) / seed_figures["windowsPerSecond"], 2)
    print(f"max |ours - seed| = {diff:.2e} over {len(merged)} rows (labels equal: {figures['labelsEqual']})")
    print(f"speed-up: {figures['speedupModelLoop']}x (model loop), {figures['speedupEndToEnd']}x (end to end)")

    if args.spark:
        body_spark = {**body, "engine": "spark", "output": {"path": "spark.parquet"}}
        started = time.perf_counter()
        spark = run(PredictJobSpec.model_validate(body_spark), RunContext(base_dir=work, instruction=instruction_for_policy(args.device)))
        wall = time.perf_counter() - started
        spark_frame = pd.read_parquet(work / "spark.parquet").merge(got, on=["doc", "pos"], suffixes=("", "_local"))
        spark_diff = max(float(np.abs(spark_frame[c] - spark_frame[c + "_local"]).max()) for c in probability_columns)
        figures["spark"] = {"windowsPerSecond": spark["windowsPerSecond"], "endToEndSeconds": round(wall, 2),
                            "maxAbsDiffToLocal": spark_diff, "batchSize": spark["batchSize"]}
        print(f"ours (spark):   {spark['windowsPerSecond']:>10,.0f} windows/s (Spark job incl. worker start), "
              f"{wall:.1f}s end to end incl. JVM; max |spark - local| = {spark_diff:.2e}; "
              f"{spark['windowsPerSecond'] / seed_figures['windowsPerSecond']:.2f}x the seed's way")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0


def make_model(folder: Path, args: argparse.Namespace) -> Path:
    import keras

    from gpubatch_jobs.artifacts import Preprocessing

    keras.utils.set_random_seed(0)
    inputs = keras.Input((args.window, args.features))
    hidden = keras.layers.LSTM(128, return_sequences=True)(inputs)
    hidden = keras.layers.LSTM(128, return_sequences=True)(hidden)
    outputs = keras.layers.Dense(args.classes, activation="softmax")(hidden)
    folder.mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    Preprocessing(model_type="rnn", backend=args.backend, feature_columns=[f"f{i}" for i in range(args.features)],
                  classes=[f"c{i}" for i in range(args.classes)], mean=[0.0] * args.features,
                  scale=[1.0] * args.features, id_column="doc", position_column="pos",
                  window_size=args.window, window_stride=args.stride).save(folder)
    return folder


def make_documents(args: argparse.Namespace, model_dir: Path):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    from gpubatch_jobs.artifacts import Preprocessing

    prep = Preprocessing.load(model_dir)
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 2000, size=args.docs)  # some shorter than the window
    n = int(lengths.sum())
    frame = pd.DataFrame(rng.normal(size=(n, prep.n_features)).astype(np.float32), columns=prep.feature_columns)
    frame.insert(0, "pos", np.concatenate([np.arange(length) for length in lengths]))
    frame.insert(0, "doc", np.repeat([f"doc-{i:05d}" for i in range(args.docs)], lengths))
    return frame


def run_seed(model_dir: Path, table, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import numpy as np
    from seed_predict import seed_predict

    from gpubatch_jobs.artifacts import load_artifact, window_starts

    model, prep = load_artifact(model_dir)
    docs = table["doc"].unique()[: args.seed_docs]
    subset = table[table["doc"].isin(docs)]
    windows = sum(len(window_starts(len(g), args.window, args.stride)) for _, g in subset.groupby("doc"))
    model.predict(np.zeros((64, args.window, prep.n_features), np.float32), verbose=0)  # warm, as a fair start
    started = time.perf_counter()
    frame = seed_predict(model, prep, subset, args.window, args.stride)
    seconds = time.perf_counter() - started
    return {"windowsPerSecond": round(windows / seconds, 1), "windows": windows, "seconds": round(seconds, 2)}, frame


if __name__ == "__main__":
    sys.exit(main())

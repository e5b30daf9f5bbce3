"""PredictJob benchmark: the whole process a user waits for, and the model loop, against the seed's way.

    .venv/bin/python bench/predict.py --windows 4000                 # CPU, LSTM 2x128, window 50, 100 features
    .venv/bin/python bench/predict.py --windows 100000
    .venv/bin/python bench/predict.py --windows 4000 --fixed 256     # also batchSize: 256 beside auto
    .venv/bin/python bench/predict.py --windows 4000 --spark         # also engine: spark (local[*])
    python bench/predict.py --backend torch --device gpu --windows 1000000   # on a GPU
                                            # (prints "skipped: no GPU" where none is visible)

Same model (a fresh LSTM 2x128 saved as a TrainJob artifact, or --model
FOLDER), same documents, same machine, one run. Each side runs as its own
process, timed from outside from interpreter start to exit:

- ours: `gpubatch run -q job.yaml` (a PredictJob manifest, engine local);
- the seed's way: `bench/seed_process.py` (import TensorFlow, load the model,
  pandas, one `model.predict()` per 64 windows, write Parquet; with
  `--backend torch|jax`, standalone Keras on that backend instead of TensorFlow's).

Prints both whole-process times and their ratio, each side's model-loop
windows/s (ours excludes the one compile and any probe in every mode, see
`seconds` in the summary), and the largest difference between the outputs
(must be < 1e-5). `--seed-windows N` runs the seed's way on the first
documents up to N windows and extrapolates its whole-process time (printed
as such): its fixed cost (interpreter, import, load) as measured, its model
loop at its windows/s, its Parquet read and write at their seconds per row;
by default it runs on everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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
    parser.add_argument("--windows", type=int, default=4000, help="about this many windows (documents of 20-2,000 rows)")
    parser.add_argument("--seed-windows", type=int, help="run the seed's way on about this many windows, extrapolate")
    parser.add_argument("--batch-size", default="auto", help="spec.batchSize of our run (auto or a size)")
    parser.add_argument("--fixed", type=int, help="also run ours with this fixed batchSize")
    parser.add_argument("--spark", action="store_true", help="also run engine: spark")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, data, outputs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        return bench(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path) -> int:
    if args.device == "gpu":
        from gpubatch_jobs.devices import probe

        found = probe()
        if not found.gpus:
            print(f"PredictJob benchmark, backend {args.backend}, device gpu: skipped: no GPU "
                  f"({found.error or 'none visible'})")
            return 0
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "jobs"), os.environ.get("PYTHONPATH", "")])}
    # This process only builds the model and compares the outputs: it leaves the GPU (and its
    # memory, which TensorFlow and JAX would otherwise take) to the two runs it times.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["JAX_PLATFORMS"] = "cpu"
    import numpy as np
    import pandas as pd

    model_dir = Path(args.model).resolve() if args.model else make_model(work / "model", args)
    table = make_documents(args, model_dir)
    table.to_parquet(work / "rows.parquet", index=False)
    print(f"data: {table['doc'].nunique()} documents, {len(table)} rows, window {args.window}, "
          f"stride {args.stride}, {args.features} features, backend {args.backend}, {os.cpu_count()} CPUs")

    runs = {"ours": run_ours(work, model_dir, args, env, args.batch_size, "ours.parquet")}
    if args.fixed:
        runs["fixed"] = run_ours(work, model_dir, args, env, str(args.fixed), "fixed.parquet")
    seed = run_seed(work, model_dir, table, args, env)
    windows = runs["ours"]["summary"]["items"]["windows"]
    figures: dict = {"windows": windows, "rows": len(table), "seed": seed}

    print(f"seed's way:  whole process {seed['wholeSeconds']:7.2f} s"
          f"{' (extrapolated from ' + str(seed['windowsRun']) + ' windows)' if seed['extrapolated'] else ''}; "
          f"model loop {seed['windowsPerSecond']:>9,.0f} windows/s "
          f"(import {seed['importSeconds']:.2f} s, load {seed['loadSeconds']:.2f} s, read {seed['readSeconds']:.2f} s)")
    for name, run in runs.items():
        summary = run["summary"]
        whole = run["wholeSeconds"]
        parts = summary["seconds"]
        label = f"ours ({summary['batchSize']}{', auto' if name == 'ours' and args.batch_size == 'auto' else ''})"
        figures[name] = {"wholeSeconds": round(whole, 2), "windowsPerSecond": summary["windowsPerSecond"],
                         "batchSize": summary["batchSize"], "batchSizeReason": summary["batchSizeReason"],
                         "probes": summary["batchSizeProbes"], "seconds": parts,
                         "speedupWholeProcess": round(seed["wholeSeconds"] / whole, 2),
                         "speedupModelLoop": round(summary["windowsPerSecond"] / seed["windowsPerSecond"], 2)}
        print(f"{label + ':':<12} whole process {whole:7.2f} s ({seed['wholeSeconds'] / whole:.2f}x the seed's way); "
              f"model loop {summary['windowsPerSecond']:>9,.0f} windows/s "
              f"({summary['windowsPerSecond'] / seed['windowsPerSecond']:.1f}x); "
              + ", ".join(f"{k.removesuffix('Seconds')} {v:.2f}" for k, v in parts.items()) + " s; "
              + summary["batchSizeReason"])

    got = pd.read_parquet(work / "ours.parquet")
    seed_frame = pd.read_parquet(work / "seed.parquet")
    merged = got.merge(seed_frame, on=["doc", "pos"], suffixes=("", "_seed"))
    probability_columns = [c for c in got.columns if c.startswith("p_")]
    diff = max(float(np.abs(merged[c] - merged[c + "_seed"]).max()) for c in probability_columns)
    figures["maxAbsDiff"] = diff
    figures["labelsEqual"] = bool((merged["label"] == merged["label_seed"]).all())
    print(f"max |ours - seed| = {diff:.2e} over {len(merged)} rows (labels equal: {figures['labelsEqual']})")

    if args.spark:
        spark = run_ours(work, model_dir, args, env, args.batch_size, "spark.parquet", engine="spark")
        spark_frame = pd.read_parquet(work / "spark.parquet")
        same_order = bool((spark_frame["doc"].to_numpy() == got["doc"].to_numpy()).all()
                          and (spark_frame["pos"].to_numpy() == got["pos"].to_numpy()).all())
        spark_diff = max(float(np.abs(spark_frame[c] - got[c]).max()) for c in probability_columns)
        figures["spark"] = {"wholeSeconds": round(spark["wholeSeconds"], 2),
                            "windowsPerSecond": spark["summary"]["windowsPerSecond"],
                            "maxAbsDiffToLocal": spark_diff, "sameRowOrder": same_order}
        print(f"ours (spark): whole process {spark['wholeSeconds']:7.2f} s incl. JVM "
              f"({seed['wholeSeconds'] / spark['wholeSeconds']:.2f}x the seed's way); "
              f"max |spark - local| = {spark_diff:.2e}; same file, same row order: {same_order}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0


def run_ours(work: Path, model_dir: Path, args: argparse.Namespace, env: dict, batch: str, output: str,
             engine: str = "local") -> dict:
    manifest = work / f"{output}.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "gpubatch.dev/v1alpha1", "kind": "PredictJob", "metadata": {"name": "bench"},
        "spec": {"model": str(model_dir), "input": {"path": "rows.parquet"},
                 "output": {"path": output, "overwrite": True}, "engine": engine,
                 "windowSize": args.window, "stride": args.stride,
                 "batchSize": batch if batch == "auto" else int(batch)}}))
    command = [sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", "--device", args.device, str(manifest)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    whole = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"gpubatch run failed ({result.returncode}):\n{result.stderr}\n{result.stdout}")
    return {"wholeSeconds": whole, "summary": json.loads(result.stdout.strip().splitlines()[-1])}


def run_seed(work: Path, model_dir: Path, table, args: argparse.Namespace, env: dict) -> dict:  # type: ignore[no-untyped-def]
    rows = work / "rows.parquet"
    extrapolated = False
    subset = table
    if args.seed_windows:
        subset = first_documents(table, args.seed_windows, args.window, args.stride)
        if len(subset) < len(table):
            rows, extrapolated = work / "seed-rows.parquet", True
            subset.to_parquet(rows, index=False)
    command = [sys.executable, str(ROOT / "bench" / "seed_process.py"), str(model_dir), str(rows),
               str(work / "seed.parquet"), str(args.window), str(args.stride)]
    if args.device == "cpu":  # the seed's script had no device switch: hide the GPU from it
        env = {**env, "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    whole = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the seed's way failed ({result.returncode}):\n{result.stderr}")
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    rate = facts["windows"] / facts["modelSeconds"]
    total_windows = count_windows(table, args.window, args.stride)
    if extrapolated:
        # Its fixed cost (interpreter, import, load) as measured, every window at its model-loop rate,
        # and reading and writing every row at the seconds per row it took on its subset.
        io_seconds = facts["readSeconds"] + facts["writeSeconds"]
        whole = (whole - facts["modelSeconds"] - io_seconds + total_windows / rate
                 + io_seconds * len(table) / len(subset))
    return {"wholeSeconds": round(whole, 2), "windowsPerSecond": round(rate, 1), "windowsRun": facts["windows"],
            "extrapolated": extrapolated, **{k: v for k, v in facts.items() if k.endswith("Seconds")}}


def count_windows(table, window: int, stride: int) -> int:  # type: ignore[no-untyped-def]
    from gpubatch_jobs.artifacts import window_starts

    return sum(len(window_starts(int(n), window, stride)) for n in table.groupby("doc", sort=False).size())


def first_documents(table, windows: int, window: int, stride: int):  # type: ignore[no-untyped-def]
    from gpubatch_jobs.artifacts import window_starts

    sizes = table.groupby("doc", sort=False).size()
    keep, total = [], 0
    for doc, n in sizes.items():
        if total >= windows:
            break
        keep.append(doc)
        total += len(window_starts(int(n), window, stride))
    return table[table["doc"].isin(keep)]


def make_model(folder: Path, args: argparse.Namespace) -> Path:
    from gpubatch_jobs.artifacts import Preprocessing
    from gpubatch_jobs.quiet import import_keras

    keras = import_keras()

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
    """Documents of 20-2,000 rows (some shorter than the window) until about `--windows` windows."""
    import numpy as np
    import pandas as pd

    from gpubatch_jobs.artifacts import Preprocessing, window_starts

    prep = Preprocessing.load(model_dir)
    rng = np.random.default_rng(0)
    lengths: list[int] = []
    windows = 0
    while windows < args.windows:
        length = int(rng.integers(20, 2000))
        lengths.append(length)
        windows += len(window_starts(length, args.window, args.stride))
    n = int(sum(lengths))
    frame = pd.DataFrame(rng.normal(size=(n, prep.n_features)).astype(np.float32), columns=prep.feature_columns)
    frame.insert(0, "pos", np.concatenate([np.arange(length) for length in lengths]))
    frame.insert(0, "doc", np.repeat([f"doc-{i:05d}" for i in range(len(lengths))], lengths))
    return frame


if __name__ == "__main__":
    sys.exit(main())

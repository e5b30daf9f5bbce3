"""TrainJob benchmark: samples/s and time to a stated validation accuracy, dnn and rnn.

    .venv/bin/python bench/train.py                        # CPU here, Keras on TensorFlow (~1 minute)
    python bench/train.py --backend torch --device gpu     # the GPU machine (Keras on torch)
    python bench/train.py --models rnn --batch-size 256 --epochs 20
    .venv/bin/python bench/train.py --models dnn --workers 2   # 1 worker, then 2 (gpubatch run --workers 2)

Each row is one real `gpubatch run` of a TrainJob in a fresh process (the Keras
backend is fixed per process), on real data made offline:
  dnn   scikit-learn's bundled handwritten digits (1,797 rows, 64 features,
        10 classes), tiled x`--dnn-repeat` with small noise so an epoch is long
        enough to time; without scikit-learn a seeded 10-class mixture stands in
  rnn   the stdlib source lines of examples/30-train-lines (code / comment /
        docstring / blank, 64 features per line, windows of 32 lines)
Columns: samples/s over the epochs after the first (the first one carries
graph building), seconds until val_accuracy first reaches the target
(cumulative epoch time), best val_accuracy, epochs run, device and precision.
With `--workers N` every model runs twice, as one worker (the baseline) and as
N local worker processes (TensorFlow's MultiWorkerMirroredStrategy over gRPC on
loopback, the same global batch): samples/s in total, per worker, and the total
against the one-worker row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"dnn": 0.95, "rnn": 0.95}


def digits_table(repeat: int) -> tuple[pd.DataFrame, str]:
    try:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y, origin = bunch.data.astype(np.float32), bunch.target, "scikit-learn digits"
    except ImportError:
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 3, size=(10, 64))
        y = rng.integers(0, 10, 1797)
        x, origin = (centres[y] + rng.normal(size=(1797, 64))).astype(np.float32), "seeded 10-class mixture"
    rng = np.random.default_rng(1)
    x = np.concatenate([x + rng.normal(0, 0.3, x.shape).astype(np.float32) for _ in range(repeat)])
    y = np.tile(y, repeat)
    frame = pd.DataFrame(x, columns=[f"px{i}" for i in range(x.shape[1])])
    frame["label"] = y
    return frame, f"{origin} x{repeat}"


def lines_table(folder: Path) -> tuple[Path, str]:
    sys.path.insert(0, str(ROOT / "examples" / "30-train-lines"))
    import prepare  # type: ignore[import-not-found]

    frames = []
    for path in prepare.candidate_files()[:90]:
        frame = prepare.label_file(path)
        if frame is not None:
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True).drop(columns=["text"])
    path = folder / "lines.parquet"
    table.to_parquet(path, index=False)
    return path, f"{table['file'].nunique()} stdlib files, {len(table)} lines"


def manifest(model: str, args: argparse.Namespace, data: Path, out: Path) -> str:
    """The TrainJob manifest (JSON, which YAML reads as it is)."""
    models = {
        "dnn": {"type": "dnn", "hiddenUnits": [256, 128], "dropout": 0.1},
        "rnn": {"type": "rnn", "cell": "lstm", "layers": 2, "hiddenSize": 64, "windowSize": 32, "windowStride": 16},
    }
    inputs = {"path": str(data)} if model == "dnn" else {"path": str(data), "idColumn": "file",
                                                          "positionColumn": "line"}
    return json.dumps({
        "apiVersion": "gpubatch.dev/v1alpha1", "kind": "TrainJob", "metadata": {"name": f"bench-{model}"},
        "spec": {
            "device": {"policy": args.device}, "model": models[model], "epochs": args.epochs,
            "batchSize": args.batch_size or (256 if model == "dnn" else 32), "learningRate": args.learning_rate,
            "backend": args.backend, "mixedPrecision": args.mixed_precision, "checkpoints": False,
            "input": inputs, "output": {"path": str(out)},
        },
    }, indent=1)


def time_to_target(history: dict[str, list[float]], target: float) -> float | None:
    elapsed = 0.0
    for seconds, accuracy in zip(history["seconds"], history.get("val_accuracy", []), strict=False):
        elapsed += seconds
        if accuracy >= target:
            return elapsed
    return None


def run_one(model: str, args: argparse.Namespace, data: Path, work: Path, workers: int = 1) -> dict[str, object]:
    out = work / f"out-{model}-w{workers}"
    path = work / f"{model}-w{workers}.yaml"
    path.write_text(manifest(model, args, data, out))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    extra = ["--workers", str(workers)] if workers > 1 else []
    done = subprocess.run([sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(path), *extra],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{model}: gpubatch run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    steady = history["seconds"][1:] or history["seconds"]
    per_epoch = metrics["samples"]["train"]
    total = per_epoch * len(steady) / sum(steady)
    return {
        "model": model,
        "workers": workers,
        "samplesPerSecond": total,
        "samplesPerSecondPerWorker": total / workers,
        "unit": metrics["samples"]["unit"],
        "timeToTarget": time_to_target(history, TARGETS[model]),
        "target": TARGETS[model],
        "bestValAccuracy": max(history.get("val_accuracy", [0.0])),
        "epochs": metrics["epochs"],
        "batchSize": metrics["batchSize"],
        "device": metrics["device"],
        "backend": metrics["backend"],
        "mixedPrecision": metrics["mixedPrecision"],
        "gpus": metrics["gpus"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dnn", "rnn"], choices=["dnn", "rnn"])
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "torch", "jax"])
    parser.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=None, help="default: dnn 256, rnn 32")
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--dnn-repeat", type=int, default=10, help="copies of the digits, with noise")
    parser.add_argument("--workers", type=int, default=1,
                        help="N > 1: each model also as N local workers (gpubatch run --workers N), against 1")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpubatch-bench-train-") as tmp:
        work = Path(tmp)
        for model in args.models:
            if model == "dnn":
                frame, origin = digits_table(args.dnn_repeat)
                data = work / "digits.parquet"
                frame.to_parquet(data, index=False)
            else:
                data, origin = lines_table(work)
            print(f"{model}: {origin}", flush=True)
            for workers in sorted({1, args.workers}):
                rows.append(run_one(model, args, data, work, workers))
    print(f"\n{'model':5} {'device':6} {'backend':10} {'mp':3} {'batch':>5} {'workers':>7} {'samples/s':>18} "
          f"{'per worker':>10} {'vs 1 worker':>11} {'to target (s)':>14} {'best val acc':>12} {'epochs':>6}")
    baseline = {row["model"]: row["samplesPerSecond"] for row in rows if row["workers"] == 1}
    for row in rows:
        target = row["timeToTarget"]
        reached = f"{target:.2f}" if isinstance(target, float) else "not reached"
        ratio = row["samplesPerSecond"] / baseline[row["model"]]
        print(f"{row['model']:5} {row['device']:6} {row['backend']:10} {'on' if row['mixedPrecision'] else 'off':3} "
              f"{row['batchSize']:>5} {row['workers']:>7} {row['samplesPerSecond']:>9.0f} {row['unit']:>8} "
              f"{row['samplesPerSecondPerWorker']:>10.0f} {ratio:>10.2f}x "
              f"{reached:>14} {row['bestValAccuracy']:>12.4f} {row['epochs']:>6}   (target {row['target']})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

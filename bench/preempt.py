"""Preemption benchmark: seconds of training lost per preemption, epoch-level resume vs step-level.

    .venv/bin/python bench/preempt.py                      # epochs of ~60 s on this CPU (about 8 minutes)
    .venv/bin/python bench/preempt.py --epoch-seconds 15   # the same, shorter

A dnn TrainJob on a seeded table (rows sized so that one epoch takes about
--epoch-seconds here, from a short calibration run) runs under `gpubatch run`,
twice, each time stopped --at (default 0.5) of the way into epoch 2:

  step-level (this release)   SIGTERM: the engine finishes the step in flight,
                              writes a step checkpoint and exits 143
  epoch-level (the baseline)  the process ends without saving (as a SIGTERM did
                              before: exit at once; SIGKILL here), so the next
                              run resumes from the epoch-1 checkpoint

Then each is run again to the end. Printed per mode: the seconds of training
lost (trained by the stopped run, then trained again by the next: from the
state the next run resumes from to the signal), the seconds from the signal to
the process's exit, the checkpoint it resumed from, and the second run's own
wall time, which shows the loss independently (it redoes the lost part) where
the machine is quiet enough for the difference to stand out of the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def table(rows: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 16)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] > 0).astype(int)
    pd.DataFrame({**{f"f{i}": x[:, i] for i in range(16)}, "label": label}).to_parquet(path)


def manifest(folder: Path, name: str, data: Path, epochs: int, batch: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({
        "apiVersion": "gpubatch.dev/v1alpha1", "kind": "TrainJob", "metadata": {"name": name},
        "spec": {"device": {"policy": "cpu"}, "model": {"type": "dnn", "hiddenUnits": [128, 64]},
                 "epochs": epochs, "batchSize": batch, "validationSplit": 0.1, "seed": 1,
                 "input": {"path": str(data)}, "output": {"path": str(folder / name)}},
    }))
    return path


def command(path: Path) -> list[str]:
    return [sys.executable, "-m", "gpubatch_jobs.cli", "run", "-q", str(path)]


def latest(out: Path) -> dict:
    try:
        return json.loads((out / "checkpoints" / "latest.json").read_text())
    except (OSError, ValueError):
        return {}


def calibrate(folder: Path, batch: int, target: float) -> int:
    """Rows giving an epoch of about `target` seconds: time one epoch of a small table."""
    rows = 100_000
    data = folder / "calibrate.parquet"
    table(rows, data)
    done = subprocess.run(command(manifest(folder, "calibrate", data, 2, batch)), env=ENV, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"calibration run failed:\n{done.stderr[-3000:]}")
    seconds = json.loads((folder / "calibrate" / "metrics.json").read_text())["history"]["seconds"][-1]
    return max(10_000, int(rows * target / seconds))


def stopped_run(path: Path, out: Path, at: float, sig: signal.Signals) -> dict[str, float | int | str]:
    proc = subprocess.Popen(command(path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while latest(out).get("epoch", 0) < 1:
        if proc.poll() is not None:
            raise SystemExit(f"run ended early:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    checkpointed = time.monotonic()  # the epoch-1 checkpoint is committed (within 50 ms)
    epoch_seconds = latest(out)["history"]["seconds"][-1]
    time.sleep(at * epoch_seconds)
    signalled = time.monotonic()
    proc.send_signal(sig)
    proc.communicate(timeout=600)
    exited = time.monotonic()
    meta = latest(out)
    step = int(meta.get("step", 0))
    # The state the next run starts from was reached at the epoch-1 checkpoint (baseline), or, for a
    # step checkpoint, after the step in flight, i.e. after the signal: nothing trained is redone.
    lost = signalled - checkpointed if step == 0 else 0.0
    return {"exitCode": proc.returncode, "secondsLost": lost, "signalToExit": exited - signalled,
            "resumeFrom": f"epoch {meta.get('epoch')}, step {step}", "epochSeconds": epoch_seconds}


def finish(path: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(command(path), env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"resumed run failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-seconds", type=float, default=60.0, help="target seconds of one epoch (default 60)")
    parser.add_argument("--at", type=float, default=0.5, help="how far into epoch 2 the signal comes (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpubatch-bench-preempt-") as tmp:
        folder = Path(tmp)
        rows = calibrate(folder, args.batch_size, args.epoch_seconds)
        data = folder / "rows.parquet"
        table(rows, data)
        print(f"dnn TrainJob, {rows} rows, batch {args.batch_size}, 3 epochs; signal {args.at:.0%} into epoch 2; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        results = {}
        for mode, sig in (("step-level (SIGTERM, this release)", signal.SIGTERM),
                          ("epoch-level (baseline: exit without saving)", signal.SIGKILL)):
            path = manifest(folder, f"job-{sig.name.lower()}", data, 3, args.batch_size)
            result = stopped_run(path, folder / f"job-{sig.name.lower()}", args.at, sig)
            result["resumedRunSeconds"] = finish(path)
            results[mode] = result
        print(f"{'mode':46} {'lost s':>8} {'signal->exit s':>15} {'resumed run s':>14}  resumed from")
        for mode, r in results.items():
            print(f"{mode:46} {r['secondsLost']:8.1f} {r['signalToExit']:15.2f} {r['resumedRunSeconds']:14.1f}  "
                  f"{r['resumeFrom']} (epoch {r['epochSeconds']:.1f} s, exit {r['exitCode']})")
        step, epoch = results.values()
        print(f"work lost per preemption: {step['secondsLost']:.1f} s vs {epoch['secondsLost']:.1f} s (baseline); "
              f"the resumed run is {epoch['resumedRunSeconds'] - step['resumedRunSeconds']:.1f} s shorter")


if __name__ == "__main__":
    main()

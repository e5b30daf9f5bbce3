"""`gpubatch run`: a TrainJob trains a small RNN, then a PredictJob labels documents it has not seen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.cli import main


def _documents(n_docs: int, seed: int) -> pd.DataFrame:
    """Rows labelled by their first feature's sign, so even a tiny model learns something."""
    rng = np.random.default_rng(seed)
    frames = []
    for doc in range(n_docs):
        length = int(rng.integers(3, 30))
        values = rng.normal(size=(length, 3))
        frames.append(pd.DataFrame({"doc": f"s{seed}-{doc}", "pos": np.arange(length),
                                    "label": np.where(values[:, 0] > 0, "up", "down"),
                                    "f0": values[:, 0], "f1": values[:, 1], "f2": values[:, 2]}))
    return pd.concat(frames, ignore_index=True)


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_train_then_predict_unseen_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    _documents(40, seed=0).to_parquet(data / "train.parquet", index=False)
    holdout = _documents(12, seed=1)
    holdout.drop(columns=["label"]).to_parquet(data / "holdout.parquet", index=False)
    (tmp_path / "train.yaml").write_text("""
apiVersion: gpubatch.dev/v1alpha1
kind: TrainJob
metadata: {name: tiny-rnn}
spec:
  model: {type: rnn, cell: gru, layers: 1, hiddenSize: 8, windowSize: 6, windowStride: 3}
  epochs: 3
  batchSize: 16
  learningRate: 0.02
  checkpoints: false
  input: {path: pvc://data/train.parquet, labels: label, idColumn: doc, positionColumn: pos}
  output: {path: pvc://out/model}
""")
    (tmp_path / "predict.yaml").write_text("""
apiVersion: gpubatch.dev/v1alpha1
kind: PredictJob
metadata: {name: tiny-predict}
spec:
  model: pvc://out/model
  batchSize: 16
  input: {path: pvc://data/holdout.parquet}
  output: {path: pvc://out/labels.parquet}
""")
    mounts = ["--mount", f"data={data}", "--mount", f"out={out}", "-q"]
    assert main(["run", str(tmp_path / "train.yaml"), *mounts]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "predict.yaml"), *mounts]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["ok"] and summary["kind"] == "PredictJob" and summary["windowSize"] == 6
    assert summary["items"]["rows"] == len(holdout)
    labels = pd.read_parquet(out / "labels.parquet")
    assert labels["doc"].tolist() == holdout["doc"].tolist() and set(labels["label"]) <= {"up", "down"}
    assert (labels["label"] == holdout["label"]).mean() > 0.6  # better than a coin, on unseen documents

    # A second run refuses to replace the result (exit 1), and says how to.
    assert main(["run", str(tmp_path / "predict.yaml"), *mounts]) == 1
    assert "overwrite" in _last_json(capsys.readouterr().out)["message"]

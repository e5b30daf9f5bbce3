"""rnn TrainJob: a repeated position is refused like PredictJob refuses it; a resumed run equals an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.spec.kinds import TrainJobSpec
from gpubatch_jobs.train import run
from tests.unit.local import run_context
from tests.unit.test_train_bad_input import sequences


def test_repeated_position_in_training_names_document_and_rows(tmp_path: Path) -> None:
    frame = sequences()
    frame = pd.concat([frame, frame[(frame["doc"] == "d1") & (frame["pos"] == 3)]], ignore_index=True)
    frame.to_parquet(tmp_path / "lines.parquet", index=False)
    spec = TrainJobSpec.model_validate({
        "model": {"type": "rnn", "hiddenSize": 4, "layers": 1, "windowSize": 4}, "epochs": 1,
        "input": {"path": "lines.parquet", "idColumn": "doc", "positionColumn": "pos"},
        "output": {"path": "out/model"}})
    with pytest.raises(BadInput) as caught:
        run(spec, run_context(spec, base_dir=tmp_path))
    assert caught.value.field == "spec.input.positionColumn"
    assert "document 'd1' has position 3 more than once (rows 9 and 19)" in str(caught.value)
    assert not (tmp_path / "out").exists()


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the engine catches it."""


def _documents(n_docs: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for doc in range(n_docs):
        length = int(rng.integers(8, 30))
        values = rng.normal(size=(length, 3))
        frames.append(pd.DataFrame({"doc": f"d{doc}", "pos": np.arange(length),
                                    "label": np.where(values[:, 0] + 0.3 * values[:, 1] > 0, "up", "down"),
                                    "f0": values[:, 0], "f1": values[:, 1], "f2": values[:, 2]}))
    return pd.concat(frames, ignore_index=True)


def _spec(out: str) -> TrainJobSpec:
    return TrainJobSpec.model_validate({
        "device": {"policy": "cpu"}, "seed": 7,
        "model": {"type": "rnn", "cell": "gru", "layers": 1, "hiddenSize": 8, "windowSize": 6, "windowStride": 3,
                  "dropout": 0.3},
        "epochs": 4, "batchSize": 8, "learningRate": 0.01, "validationSplit": 0.25,
        "input": {"path": "rows.parquet", "labels": "label", "idColumn": "doc", "positionColumn": "pos"},
        "output": {"path": out}})


def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    from gpubatch_jobs.artifacts import load_artifact

    _documents().to_parquet(tmp_path / "rows.parquet", index=False)
    whole = run(_spec("whole"), run_context(_spec("whole"), base_dir=tmp_path))
    assert whole["epochs"] == 4

    def kill_after_epoch_2(event: dict) -> None:
        if str(event.get("stage", "")).startswith("epoch 2/4 "):
            raise Killed

    with pytest.raises(Killed):
        run(_spec("resumed"), run_context(_spec("resumed"), base_dir=tmp_path, progress_sinks=[kill_after_epoch_2],
                                         progress_interval_s=0.0))
    assert not (tmp_path / "resumed" / "model.keras").exists()
    resumed = run(_spec("resumed"), run_context(_spec("resumed"), base_dir=tmp_path))
    assert resumed["resumedFromEpoch"] == 2 and resumed["epochs"] == 4

    a, _ = load_artifact(tmp_path / "whole")
    b, _ = load_artifact(tmp_path / "resumed")
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert resumed["metrics"]["accuracy"] == pytest.approx(whole["metrics"]["accuracy"], abs=1e-9)

"""PredictJob on a real GPU: same results as the CPU, one trace, auto batch larger than on the CPU.

Skipped where no GPU is usable (the device layer decides, as the engine does)
for the Keras backend KERAS_BACKEND names (default tensorflow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.contract import instruction_for_policy
from gpubatch_jobs.devices import reset_cache, select_device
from gpubatch_jobs.predict import run
from gpubatch_jobs.predict.device import keras_backend
from gpubatch_jobs.spec.kinds import PredictJobSpec
from tests.unit.local import run_context
from tests.unit.test_predict_support import CLASSES, make_artifact, make_rows, naive_predictions

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_ready() -> None:
    backend = keras_backend()
    reset_cache()
    if select_device(instruction_for_policy("auto"), framework=backend).device != "gpu":
        pytest.skip(f"no usable GPU for {backend} (KERAS_BACKEND)")


def test_gpu_predictions_match_the_reference(gpu_ready: None, tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "model")
    rows = make_rows([1, 5, 40, 300, 7] * 20, seed=2)
    rows["doc"] = rows["doc"] + "-" + (rows.index % 3).astype(str)  # more documents
    rows = rows.groupby("doc", sort=False, group_keys=False).apply(lambda g: g.sort_values("pos"))
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    spec = PredictJobSpec.model_validate({"model": str(artifact), "input": {"path": "rows.parquet"},
                                          "output": {"path": "pred.parquet"}, "device": {"policy": "gpu"}})
    summary = run(spec, run_context(spec, base_dir=tmp_path))
    assert summary["device"] == "gpu" and summary["traces"] == 1 and summary["batchSize"] >= 32
    got = pd.read_parquet(tmp_path / "pred.parquet")
    want = naive_predictions(artifact, rows, summary["windowSize"], summary["stride"])
    merged = got.merge(want, on=["doc", "pos"], suffixes=("", "_ref"))
    assert len(merged) == len(rows)
    for name in CLASSES:
        # cuDNN and the CPU kernels round differently; the labels must still agree.
        assert np.abs(merged[f"p_{name}"] - merged[f"p_{name}_ref"]).max() < 1e-4

"""The local engine end to end on a tiny LSTM: equal to a per-window reference, one trace, auto batch."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.contract import instruction_for_policy
from gpubatch_jobs.predict import batching, run
from gpubatch_jobs.predict.batching import ModelCache, RunStats, choose_batch_size, predict_plan
from gpubatch_jobs.predict.runner import CompiledModel
from gpubatch_jobs.predict.windows import plan_windows
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec.kinds import PredictJobSpec
from tests.unit.local import run_context
from tests.unit.test_predict_support import (
    CLASSES,
    N_FEATURES,
    make_artifact,
    make_rows,
    naive_predictions,
)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("model") / "rnn")


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_rows()


def predict(artifact: Path, table: pd.DataFrame, tmp: Path, out: str = "pred.parquet", **spec: object) -> dict:
    source = tmp / "rows.parquet"
    table.to_parquet(source, index=False)
    body = {"model": str(artifact), "input": {"path": str(source)}, "output": {"path": str(tmp / out)}, **spec}
    return run(spec := PredictJobSpec.model_validate(body), run_context(spec, base_dir=tmp))


@pytest.mark.parametrize(("batch", "window", "stride"), [(4, None, None), (7, 6, 2), ("auto", 4, 4), (64, 6, 1)])
def test_equal_to_the_per_window_reference(artifact: Path, rows: pd.DataFrame, tmp_path: Path,
                                           batch: object, window: int | None, stride: int | None) -> None:
    spec: dict[str, object] = {"batchSize": batch}
    if window:
        spec["windowSize"] = window
    if stride:
        spec["stride"] = stride
    # A fixed-shape model only takes its own window; rebuild with a free time axis for smaller ones.
    model_dir = artifact if window in (None, 6) else make_artifact(tmp_path / "free", window=None)
    summary = predict(model_dir, rows, tmp_path, **spec)
    got = pd.read_parquet(tmp_path / "pred.parquet")
    assert summary["ok"] and summary["items"]["rows"] == len(rows) == len(got)
    # One output row per input row, in the input's order.
    assert got["doc"].tolist() == rows["doc"].tolist() and got["pos"].tolist() == rows["pos"].tolist()
    want = naive_predictions(model_dir, rows, summary["windowSize"], summary["stride"])
    merged = got.merge(want, on=["doc", "pos"], suffixes=("", "_ref"))
    assert len(merged) == len(rows)
    for name in CLASSES:
        assert np.abs(merged[f"p_{name}"] - merged[f"p_{name}_ref"]).max() < 1e-5
    probs = got[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert got["label"].tolist() == [CLASSES[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert summary["traces"] == 1


def test_defaults_come_from_the_artifact(artifact: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    summary = predict(artifact, rows, tmp_path, batchSize=8)
    assert (summary["windowSize"], summary["stride"], summary["batchSize"]) == (6, 3, 8)
    assert summary["device"] == "cpu" and summary["backend"] == "tensorflow"
    assert summary["throughput"] > 0 and summary["output"].endswith("pred.parquet")


def test_one_trace_for_many_uneven_batches_and_chunks(artifact: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    from gpubatch_jobs.predict import local

    monkeypatch.setattr(local, "CHUNK_ROWS", 25)  # several chunks, each ending in a short batch
    table = make_rows([3, 9, 14, 5, 20, 2, 11], seed=4)  # no document over CHUNK_ROWS
    summary = predict(artifact, table, tmp_path, batchSize=5)
    assert summary["items"]["windows"] % 5 != 0 and summary["traces"] == 1
    # Every chunk's rows are padded to one row count, so XLA compiles the model once, not per chunk.
    assert summary["compiledShapes"] == 1, summary


def test_chunks_across_row_groups_equal_the_reference(artifact: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """Rows scaled straight from Parquet row groups (file already grouped), chunks cutting across them."""
    from gpubatch_jobs.predict import local

    monkeypatch.setattr(local, "CHUNK_ROWS", 25)
    table = make_rows([3, 9, 14, 5, 20, 2, 11, 17], seed=5, shuffle_docs=False)
    source = tmp_path / "rows.parquet"
    table.to_parquet(source, index=False, row_group_size=7)  # row groups of 7 rows: every chunk spans several
    body = {"model": str(artifact), "input": {"path": str(source)}, "output": {"path": str(tmp_path / "p.parquet")},
            "batchSize": 4}
    summary = run(spec := PredictJobSpec.model_validate(body), run_context(spec, base_dir=tmp_path))
    got = pd.read_parquet(tmp_path / "p.parquet")
    want = naive_predictions(artifact, table, summary["windowSize"], summary["stride"])
    merged = got.merge(want, on=["doc", "pos"], suffixes=("", "_ref"))
    assert len(merged) == len(table) and summary["compiledShapes"] == 1
    for name in CLASSES:
        assert np.abs(merged[f"p_{name}"] - merged[f"p_{name}_ref"]).max() < 1e-5


class OomAbove(CompiledModel):
    """Behaves like a device with room for `limit` windows per batch."""

    limit = 16

    def launch(self, rows: np.ndarray, mask: np.ndarray) -> object:
        if self.batch > self.limit:
            import tensorflow as tf

            raise tf.errors.ResourceExhaustedError(None, None, f"OOM when allocating tensor of {self.batch} windows")
        return super().launch(rows, mask)


def tiny_job(artifact: Path) -> tuple[ModelCache, object, np.ndarray]:
    from gpubatch_jobs.predict.model import load_sequence_model

    seq = load_sequence_model(artifact)
    lengths = np.array([40] * 20)
    plan = plan_windows(np.arange(20) * 40, lengths, 6, 3)
    features = np.random.default_rng(0).normal(size=(800, N_FEATURES)).astype(np.float32)
    cache = ModelCache(lambda b: OomAbove(seq.model, batch=b, window=6, n_features=N_FEATURES,
                                          backend="tensorflow", gpu=False))
    return cache, plan, features


def test_auto_batch_stops_at_the_first_out_of_memory(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "MIN_GAIN", 0.0)  # keep doubling: only the OOM may stop the search
    monkeypatch.setattr(batching, "PROBE_SHARE", float("inf"))  # nor the budget
    monkeypatch.setattr(batching, "FIRST_PROBE", 4)
    monkeypatch.setattr(batching, "PROBE_SECONDS", 0.0)
    # Each probe really compiles and runs (the model raises out-of-memory above 16), but the rate it
    # reports grows with the batch, as on an idle GPU: measured rates on a loaded 2-core machine
    # (tests run two at a time) made the fastest size 8 now and then.
    real_probe = batching._probe

    def probe(cache: ModelCache, plan: object, features: np.ndarray, size: int) -> float:
        real_probe(cache, plan, features, size)
        return 100.0 * size

    monkeypatch.setattr(batching, "_probe", probe)
    cache, plan, features = tiny_job(artifact)
    # No time budget either: on a loaded machine four compiles can take longer than the default 30 s.
    choice = choose_batch_size(cache, plan, features, gpu=True, budget_s=float("inf"))
    assert choice.size == 16
    assert [p["batchSize"] for p in choice.probes] == [4, 8, 16, 32]
    assert choice.probes[-1].get("outOfMemory") and "out of memory" in choice.reason
    assert list(cache.models) == [16]  # the chosen size stays compiled, the rest is dropped


def test_auto_batch_halves_when_even_the_first_size_does_not_fit(artifact: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "FIRST_PROBE", 64)
    monkeypatch.setattr(batching, "SMALL_JOB_BATCHES", 1)
    monkeypatch.setattr(batching, "PROBE_SECONDS", 0.0)
    cache, plan, features = tiny_job(artifact)
    assert choose_batch_size(cache, plan, features, gpu=True, budget_s=float("inf")).size == 16


def test_auto_batch_respects_the_cap(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "MIN_GAIN", 0.0)
    monkeypatch.setattr(batching, "PROBE_SHARE", float("inf"))
    monkeypatch.setattr(batching, "FIRST_PROBE", 2)
    monkeypatch.setattr(batching, "PROBE_SECONDS", 0.0)
    # Throughput that keeps growing with the batch (as on an idle GPU), so only the cap stops it:
    # measured rates on a loaded 2-core machine would make this test depend on timing.
    monkeypatch.setattr(batching, "_probe", lambda cache, plan, features, size: 100.0 * size)
    cache, plan, features = tiny_job(artifact)
    choice = choose_batch_size(cache, plan, features, gpu=False, cap=8, budget_s=float("inf"))
    assert choice.size == 8 and "cap" in choice.reason


def test_small_jobs_are_not_probed(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "FIRST_PROBE", 32)
    cache, plan, features = tiny_job(artifact)  # 260 windows: 16 batches of 32 would cover them
    choice = choose_batch_size(cache, plan, features, gpu=False)
    assert choice.size == 32 and choice.probes == [] and "small job" in choice.reason


def test_probing_stays_within_a_tenth_of_the_estimated_job(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each probe takes 1 s on a fake clock; rates keep growing, so only the budget can stop the search."""
    monkeypatch.setattr(batching, "MIN_GAIN", 0.0)
    monkeypatch.setattr(batching, "FIRST_PROBE", 2)
    now = [0.0]

    def probe(cache: object, plan: object, features: object, size: int) -> float:
        now[0] += 1.0
        return 10.0 * size  # 20 windows/s at the first size

    monkeypatch.setattr(batching, "_probe", probe)
    cache, plan, features = tiny_job(artifact)  # 260 windows: 13 s at 20 windows/s, so 1.3 s of probing
    choice = choose_batch_size(cache, plan, features, gpu=True, clock=lambda: now[0])
    assert [p["batchSize"] for p in choice.probes] == [2]
    assert choice.size == 2 and "10% of the job's estimated 13.0s" in choice.reason
    assert choice.seconds <= 0.1 * 13.0 + 1.0  # the first size's probe is the only one that can overrun


def test_an_oom_mid_run_halves_and_resumes_with_the_same_result(artifact: Path) -> None:
    cache, plan, features = tiny_job(artifact)
    stats = RunStats()
    backed_off = predict_plan(cache, 64, plan, features, len(CLASSES), stats=stats)
    assert stats.batch_size == 16 and stats.backoffs == 2
    direct = predict_plan(cache, 16, plan, features, len(CLASSES))
    np.testing.assert_allclose(backed_off, direct, atol=1e-6)


def test_hdf5_output(artifact: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    summary = predict(artifact, rows, tmp_path, out="pred.h5", batchSize=16)
    assert summary["outputFormat"] == "hdf5"
    parquet = predict(artifact, rows, tmp_path, out="pred.parquet", batchSize=16)
    table = pd.read_parquet(parquet["output"])
    with h5py.File(tmp_path / "pred.h5") as handle:
        assert list(handle.attrs["classes"]) == CLASSES
        assert [v.decode() for v in handle["doc"][:5]] == table["doc"][:5].tolist()
        np.testing.assert_allclose(handle["p_a"][()], table["p_a"].to_numpy())
        assert [v.decode() for v in handle["label"][()]] == table["label"].tolist()


def test_csv_input_and_overwrite(artifact: Path, rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.to_csv(tmp_path / "rows.csv", index=False)
    body = {"model": str(artifact), "input": {"path": "rows.csv"}, "output": {"path": "out.parquet"}, "batchSize": 8}
    ctx = RunContext(base_dir=tmp_path, instruction=instruction_for_policy("auto"))  # the specs' default
    run(PredictJobSpec.model_validate(body), ctx)
    body["output"] = {"path": "out.parquet", "overwrite": True}
    assert run(PredictJobSpec.model_validate(body), ctx)["items"]["rows"] == len(rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "rows.csv"]  # no temporary left

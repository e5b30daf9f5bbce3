"""engine: spark gives the local engine's results (one small Spark session for the module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpubatch_jobs.contract import instruction_for_policy
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.predict import run
from gpubatch_jobs.predict.spark_session import spark_conf
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec.kinds import PredictJobSpec, SparkSpec
from tests.unit.local import run_context
from tests.unit.test_predict_support import CLASSES, make_artifact, make_rows

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pyspark")
    folder = tmp_path_factory.mktemp("spark")
    make_artifact(folder / "model")
    make_rows([2, 5, 9, 14, 40, 3, 17, 6], seed=3).to_parquet(folder / "rows.parquet", index=False)
    return folder


def _spec(engine: str, out: str, **extra: object) -> PredictJobSpec:
    body = {"model": "model", "input": {"path": "rows.parquet"}, "output": {"path": out}, "engine": engine,
            "batchSize": 8, **extra}
    return PredictJobSpec.model_validate(body)


def test_spark_equals_local(workdir: Path) -> None:
    ctx = RunContext(base_dir=workdir, instruction=instruction_for_policy("auto"))  # the specs' default
    local = run(_spec("local", "local.parquet"), ctx)
    spark = run(_spec("spark", "spark.parquet", spark={"master": "local[2]", "partitions": 3}), ctx)
    assert spark["engine"] == "spark" and spark["device"] == "cpu" and spark["batchSize"] == 8
    assert spark["items"] == local["items"]
    a = pd.read_parquet(workdir / "local.parquet").sort_values(["doc", "pos"]).reset_index(drop=True)
    b = pd.read_parquet(workdir / "spark.parquet").sort_values(["doc", "pos"]).reset_index(drop=True)
    assert a[["doc", "pos", "label"]].equals(b[["doc", "pos", "label"]])
    columns = [f"p_{c}" for c in CLASSES]
    assert np.abs(a[columns].to_numpy() - b[columns].to_numpy()).max() < 1e-5
    assert not list(workdir.glob(".spark.parquet*"))  # no temporary folder left


def test_spark_bad_data_is_bad_input_before_any_task(workdir: Path) -> None:
    table = pd.read_parquet(workdir / "rows.parquet")
    pd.concat([table, table.iloc[[0]]]).to_parquet(workdir / "dup.parquet", index=False)
    spec = PredictJobSpec.model_validate({"model": "model", "input": {"path": "dup.parquet"},
                                          "output": {"path": "dup-out.parquet"}, "engine": "spark"})
    with pytest.raises(BadInput, match="more than once"):
        run(spec, run_context(spec, base_dir=workdir))
    assert not (workdir / "dup-out.parquet").exists()


@pytest.mark.parametrize(
    ("spark", "expected"),
    [
        ({"gpuInUdf": False}, {"spark.executorEnv.CUDA_VISIBLE_DEVICES": ""}),
        ({"gpuInUdf": True}, {"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1"}),
        ({"gpuInUdf": True, "master": "k8s://https://kubernetes.default.svc", "executors": 4},
         {"spark.executor.instances": "4", "spark.executor.resource.gpu.amount": "1"}),
        ({"conf": {"spark.executor.memory": "8g"}}, {"spark.executor.memory": "8g"}),
    ],
)
def test_spark_conf(spark: dict, expected: dict[str, str]) -> None:
    conf = spark_conf(SparkSpec.model_validate(spark), app="t", backend="tensorflow", partitions=4)
    assert {key: conf.get(key) for key in expected} == expected
    if spark.get("gpuInUdf"):
        assert "spark.executorEnv.CUDA_VISIBLE_DEVICES" not in conf


@pytest.mark.parametrize("suffix", [".parquet", ".h5"])
def test_spark_and_local_write_the_same_file(workdir: Path, suffix: str) -> None:
    """One output contract: one file at output.path, the input's row order, the same columns and types."""
    import pyarrow.parquet as pq

    ctx = RunContext(base_dir=workdir, instruction=instruction_for_policy("auto"))  # the specs' default
    run(_spec("local", f"same-local{suffix}"), ctx)
    run(_spec("spark", f"same-spark{suffix}", spark={"master": "local[2]", "partitions": 3}), ctx)
    local, spark = workdir / f"same-local{suffix}", workdir / f"same-spark{suffix}"
    assert spark.is_file() and local.is_file()
    rows = pd.read_parquet(workdir / "rows.parquet", columns=["doc", "pos"])
    if suffix == ".parquet":
        assert pq.read_schema(spark).remove_metadata() == pq.read_schema(local).remove_metadata()
        a, b = pd.read_parquet(local), pd.read_parquet(spark)
    else:
        import h5py

        def frame(path: Path) -> pd.DataFrame:
            with h5py.File(path, "r") as handle:
                return pd.DataFrame({name: handle[name][()] for name in handle})

        a, b = frame(local), frame(spark)
        assert list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes)
        rows["doc"] = rows["doc"].str.encode("utf-8")
    assert list(a.columns) == list(b.columns)
    assert (b["doc"].to_numpy() == rows["doc"].to_numpy()).all() and (b["pos"].to_numpy() == rows["pos"].to_numpy()).all()
    assert (a["label"].to_numpy() == b["label"].to_numpy()).all()
    columns = [f"p_{c}" for c in CLASSES]
    assert np.abs(a[columns].to_numpy() - b[columns].to_numpy()).max() < 1e-5

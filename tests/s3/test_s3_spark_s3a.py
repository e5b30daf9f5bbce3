"""Spark's own s3a:// path on a real S3 server (SeaweedFS), without a cluster.

The engine path executor pods take (spark_s3.py) run with Spark in one
process: PySpark with the s3a jars the images get (images/spark-jars.sh,
checked and cached), its reader on the s3a:// input, its parts written under
a `.partial` prefix in the bucket, the model downloaded by the Python workers
themselves, and the one result uploaded whole. Its output must equal the
local engine's on the same input, and nothing `.partial` may be left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gpubatch_jobs import storage
from tests.objstore.test_jobs import _no_partials, _run
from tests.s3.server import SeaweedS3

pytestmark = [pytest.mark.slow, pytest.mark.spark]
ROOT = Path(__file__).resolve().parents[2]

# The driver's side of run_predict_job for an s3:// output, with Spark reading and writing through
# s3a:// (as with executor pods) in a fresh JVM that has the jars on its class path.
DRIVER = """
import json, sys
from pathlib import Path
from gpubatch_jobs.contract import instruction_for_policy
from gpubatch_jobs.predict.spark import run_spark
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec.kinds import PredictJobSpec

spec = PredictJobSpec.model_validate(json.loads(sys.argv[1]))
ctx = RunContext(base_dir=Path(sys.argv[2]))
place, name = ctx.output_file(spec.output.path, field_name="spec.output.path")
summary = run_spark(spec, ctx, model_dir=ctx.input_dir(spec.model, field_name="spec.model"),
                    input_path=ctx.input_file(spec.input.path, field_name="spec.input.path"),
                    output=place.path(name), instruction=instruction_for_policy(str(spec.device.policy)),
                    place=place, s3a=True)
place.push(name)
place.finish()
print(json.dumps(summary))
"""


@pytest.fixture(scope="module")
def s3a_jars() -> str:
    out = subprocess.run(["bash", str(ROOT / "images" / "spark-jars.sh")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_spark_reads_and_writes_s3_through_s3a_like_the_local_engine(
        s3_server: SeaweedS3, s3_env: dict[str, str], bucket: str, tmp_path: Path, s3a_jars: str) -> None:
    from tests.unit.test_predict_support import make_artifact, make_rows

    model = make_artifact(tmp_path / "model")
    for path in sorted(model.rglob("*")):
        if path.is_file():
            storage.upload(path, f"s3://{bucket}/models/rnn/{path.relative_to(model)}")
    rows = make_rows()
    rows.to_parquet(tmp_path / "rows.parquet")
    storage.upload(tmp_path / "rows.parquet", f"s3://{bucket}/data/rows.parquet")

    def spec(engine: str) -> dict:
        return {"model": f"s3://{bucket}/models/rnn", "engine": engine, "device": {"policy": "cpu"},
                "input": {"path": f"s3://{bucket}/data/rows.parquet", "idColumn": "doc", "positionColumn": "pos"},
                "output": {"path": f"s3://{bucket}/out/{engine}.parquet"},
                **({"spark": {"master": "local[2]", "partitions": 4}} if engine == "spark" else {})}

    manifest = tmp_path / "local.yaml"
    manifest.write_text(json.dumps({"apiVersion": "gpubatch.dev/v1alpha1", "kind": "PredictJob",
                                    "metadata": {"name": "p-local"}, "spec": spec("local")}))
    code, _, err = _run(manifest, s3_env, tmp_path / "scratch-local")
    assert code == 0, err[-3000:]

    env = {**os.environ, **s3_env, "GPUBATCH_SCRATCH": str(tmp_path / "scratch-spark"),
           "GPUBATCH_SPARK_JARS": s3a_jars}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec("spark")), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["engine"] == "spark" and summary["objectStorage"] == "s3a", summary
    assert summary["items"]["rows"] == len(rows)

    outputs = {engine: pd.read_parquet(storage.local_input(f"s3://{bucket}/out/{engine}.parquet", field_name="o"))
               for engine in ("local", "spark")}
    pd.testing.assert_frame_equal(outputs["local"], outputs["spark"], check_exact=False, atol=1e-5)
    assert outputs["spark"]["doc"].tolist() == rows["doc"].tolist()  # the input's row order
    _no_partials(s3_server, bucket)  # the part files' prefix is gone


def test_a_missing_s3a_input_fails_without_leaving_parts(
        s3_server: SeaweedS3, s3_env: dict[str, str], bucket: str, tmp_path: Path, s3a_jars: str) -> None:
    """The driver's checks run first (the input is staged): a missing key is BadInput naming the URL."""
    spec = {"model": f"s3://{bucket}/models/none", "engine": "spark",
            "input": {"path": f"s3://{bucket}/data/none.parquet", "idColumn": "doc", "positionColumn": "pos"},
            "output": {"path": f"s3://{bucket}/out/x.parquet"}, "spark": {"master": "local[1]"}}
    env = {**os.environ, **s3_env, "GPUBATCH_SCRATCH": str(tmp_path / "scratch"), "GPUBATCH_SPARK_JARS": s3a_jars}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "BadInput" in proc.stderr and f"s3://{bucket}/models/none" in proc.stderr, proc.stderr[-2000:]
    assert not s3_server.keys(bucket)

"""`engine: spark`: the same prediction, spread over Spark executors.

The driver checks everything the local engine checks before any task runs
(artifact, settings, columns, and ids and positions, read as two columns),
so bad input fails fast with exit 1. Rows are repartitioned by document id
and sorted by position within each partition, then `mapInPandas` runs
`spark_worker.predict_partition` on Arrow batches: PySpark's own batched
inference path, with the model loaded once per Python worker.

One output contract for both engines: Spark writes its part files to a
temporary folder next to the output (with executor pods and an s3:// output,
a `.partial` prefix beside it, through s3a://: spark_s3.py); the driver puts
the rows back in the input's row order (by document id and position, which
the checks made unique) and writes one Parquet or HDF5 file, published by
rename exactly as the local engine does (an s3:// one then uploaded whole).
A downstream reader never needs to know which engine ran.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from gpubatch_jobs.contract import DeviceInstruction
from gpubatch_jobs.errors import BadInput, excerpts
from gpubatch_jobs.predict.device import keras_backend
from gpubatch_jobs.predict.model import inspect_artifact
from gpubatch_jobs.predict.output import remove, write_predictions
from gpubatch_jobs.predict.settings import PredictSettings, resolve_settings
from gpubatch_jobs.predict.spark_k8s import delete_executors, kubernetes_conf
from gpubatch_jobs.predict.spark_s3 import is_s3, read_parts, remove_parts, s3a_url
from gpubatch_jobs.predict.spark_session import spark_conf, start_session
from gpubatch_jobs.predict.spark_worker import BAD_INPUT_MARKER, WorkerConfig, predict_partition
from gpubatch_jobs.predict.table import (
    Documents,
    column_names,
    group_documents,
    read_columns,
    table_format,
)
from gpubatch_jobs.runtime import RunContext, atomic_target
from gpubatch_jobs.spec.kinds import PredictJobSpec, SparkSpec
from gpubatch_jobs.storage import Place

DOCS_PER_PARTITION = 64


def run_spark(spec: PredictJobSpec, ctx: RunContext, *, model_dir: Path, input_path: Path, output: Path,
              instruction: DeviceInstruction, place: Place | None = None, s3a: bool | None = None) -> dict[str, Any]:
    """`place`: the output's place (storage.Place). `s3a`: Spark reads s3:// inputs and writes its parts
    through s3a:// (default: with executor pods, which cannot see this pod's scratch; spark_s3.py);
    otherwise Spark in this pod reads the staged copies."""
    started = time.perf_counter()
    spark_spec = spec.spark or SparkSpec()
    remote = spark_spec.on_kubernetes if s3a is None else s3a
    source = s3a_url(spec.input.path) if remote and is_s3(spec.input.path) else str(input_path)
    model_location = spec.model if remote and is_s3(spec.model) else str(model_dir)
    # The driver checks the artifact's files without importing any framework (the executors load the
    # model), so it never takes a GPU the executors may need and starts the JVM seconds earlier.
    backend = keras_backend()
    seq = inspect_artifact(model_dir)
    settings = resolve_settings(spec, seq, output)
    if not settings.position_column:
        raise BadInput("engine spark needs a position column to order rows; set spec.input.positionColumn",
                       field="spec.input.positionColumn")
    fmt = table_format(input_path, spec.input.format)
    docs = _check_input(input_path, fmt, spec.input.dataset, settings)
    n_rows, n_docs = docs.n_rows, docs.n_documents

    parallelism = _parallelism(spark_spec)
    partitions = spark_spec.partitions or max(1, min(parallelism * 2, -(-n_docs // DOCS_PER_PARTITION)))
    # Executor pods (spark_k8s.py): this pod is the driver; its settings are made before the JVM starts.
    cluster = kubernetes_conf(spark_spec) if spark_spec.on_kubernetes else None
    conf = spark_conf(spark_spec, app=f"gpubatch-predict-{ctx.name}", backend=backend, partitions=partitions,
                      cluster=cluster)
    session = start_session(conf)
    stats = session.sparkContext.accumulator({}, StatsParam())
    config = WorkerConfig(model_dir=model_location, settings=settings, instruction=instruction,
                          gpu_in_udf=spark_spec.gpu_in_udf,
                          threads=max(1, (os.cpu_count() or 1) // min(parallelism, partitions)))
    ctx.progress(0, 1, stage="predict (spark)", force=True)
    frame = _read(session, source, input_path, fmt, spec.input.dataset, settings)
    frame = frame.repartition(partitions, settings.id_column).sortWithinPartitions(
        settings.id_column, settings.position_column)
    result = frame.mapInPandas(partial(predict_partition, config, stats=stats), _schema(frame, settings, seq))

    tmp = atomic_target(output)
    spark_dir = tmp.with_name(tmp.name + ".spark")
    # Remote parts: a `.partial` prefix beside the output, read back and deleted by this pod.
    parts = place.url(spark_dir.name) if remote and place is not None and place.is_remote else str(spark_dir)
    predict_started = time.perf_counter()
    try:
        try:
            result.write.mode("overwrite").parquet(s3a_url(parts))
        except Exception as err:
            message = str(err)
            if BAD_INPUT_MARKER in message:
                cause = message.split(BAD_INPUT_MARKER, 1)[1].splitlines()[0]
                raise BadInput(cause) from None
            raise
        predict_seconds = time.perf_counter() - predict_started
        write_predictions(_in_input_order(read_parts(parts), docs, settings), output, settings.output_format)
    finally:
        if is_s3(parts):
            remove_parts(parts)
        remove(spark_dir)
        remove(tmp)
        facts = stats.value
        if spark_spec.on_kubernetes:
            # Stopped, the executors exit; then their pods and ConfigMap go (spark_k8s.py), not
            # left Completed until the driver pod is deleted.
            app_id = session.sparkContext.applicationId
            session.stop()
            delete_executors(app_id)
    ctx.progress(1, 1, stage="predict (spark)", force=True)
    windows = int(facts.get("windows", 0))
    elapsed = time.perf_counter() - started
    devices = facts.get("devices", {})
    return {
        "ok": True,
        "engine": "spark",
        "master": conf["spark.master"],
        # how Spark itself reached s3:// paths: "s3a" (it read and wrote them), "staged" (this pod's copies)
        "objectStorage": "s3a" if remote else "staged",
        "gpuInUdf": spark_spec.gpu_in_udf,
        "partitions": partitions,
        "device": "gpu" if devices.get("gpu") else "cpu",
        "backend": backend,
        "fallbacks": ["spark.gpuInUdf is true but executors ran on the CPU"]
        if spark_spec.gpu_in_udf and not devices.get("gpu") else [],
        "batchSize": _most_used(facts.get("batchSizes", {})),
        "batchSizes": facts.get("batchSizes", {}),
        "windowSize": settings.window,
        "stride": settings.stride,
        "items": {"rows": n_rows, "documents": n_docs, "windows": windows},
        "throughput": round(windows / predict_seconds, 1) if predict_seconds else None,
        "windowsPerSecond": round(windows / predict_seconds, 1) if predict_seconds else None,
        "modelSeconds": round(facts.get("modelSeconds", 0.0), 3),
        "traces": int(facts.get("traces", 0)),
        "oomBackoffs": int(facts.get("oomBackoffs", 0)),
        "classes": list(seq.prep.classes),
        "output": str(output),
        "outputFormat": settings.output_format,
        "elapsedSeconds": round(elapsed, 3),
    }


def _check_input(path: Path, fmt: str, dataset: str | None, settings: PredictSettings) -> Documents:
    """The local engine's checks on ids and positions (two columns), and that the features exist."""
    available = column_names(path, fmt, dataset)
    missing = [name for name in settings.features if name not in available]
    if missing:
        raise BadInput(f"columns {excerpts(missing)} are not in {path.name}", field="spec.input")
    position = settings.position_column or ""
    columns = read_columns(path, fmt, [settings.id_column, position], dataset)
    import numpy as np

    return group_documents(columns[settings.id_column], columns[position], np.empty((len(columns[position]), 0)))


def _in_input_order(table: Any, docs: Documents, settings: PredictSettings) -> dict[str, Any]:
    """Spark's part files (an Arrow table) as columns in the input's row order (as the local engine writes them)."""
    import numpy as np
    import pandas as pd

    ids = table.column(settings.id_column).to_numpy(zero_copy_only=False)
    positions = table.column(settings.position_column or "").to_numpy(zero_copy_only=False)
    # Documents are numbered in grouped order (docs.ids[docs.doc_starts]); sorting Spark's rows by
    # (document number, position) gives the grouped order, and docs.order maps that to file rows.
    codes = pd.Index(docs.ids[docs.doc_starts]).get_indexer(ids)
    grouped = np.lexsort((positions, codes))
    if len(ids) != docs.n_rows or (codes < 0).any() or not np.array_equal(positions[grouped], docs.positions):
        raise RuntimeError(f"Spark returned {len(ids)} rows that do not match the {docs.n_rows} input rows")
    take = grouped[np.argsort(docs.order, kind="stable")]
    return {name: table.column(name).to_numpy(zero_copy_only=False)[take] for name in table.column_names}


def _read(session: Any, source: str, path: Path, fmt: str, dataset: str | None, settings: PredictSettings) -> Any:
    """`source`: where Spark reads (the file, or its s3a:// URL); `path`: the driver's copy, for HDF5."""
    wanted = [settings.id_column, settings.position_column] + [
        name for name in settings.features if name not in (settings.id_column, settings.position_column)]
    if fmt == "parquet":
        frame = session.read.parquet(source)
    elif fmt == "csv":
        frame = session.read.csv(source, header=True, inferSchema=True)
    else:  # HDF5 has no Spark reader: read on the driver, hand over through Arrow
        import pandas as pd

        frame = session.createDataFrame(pd.DataFrame(read_columns(path, fmt, [str(name) for name in wanted], dataset)))
    return frame.select(*[f"`{name}`" for name in wanted])


def _schema(frame: Any, settings: PredictSettings, seq: Any) -> Any:
    from pyspark.sql.types import FloatType, StringType, StructField, StructType

    fields = {field.name: field for field in frame.schema.fields}
    out = [fields[settings.id_column], fields[settings.position_column or ""], StructField("label", StringType())]
    out += [StructField(f"p_{name}", FloatType()) for name in seq.prep.classes]
    return StructType(out)


def _parallelism(spark: SparkSpec) -> int:
    master = spark.local_master
    if master.startswith("local") and not spark.on_kubernetes:
        inner = master[master.find("[") + 1: master.find("]")] if "[" in master else "1"
        return os.cpu_count() or 1 if inner in ("*", "") else max(1, int(inner.split(",")[0]))
    return spark.executor_count


def _most_used(sizes: dict[str, int]) -> int | None:
    return int(max(sizes, key=lambda k: sizes[k])) if sizes else None


class StatsParam:
    """Spark accumulator for the workers' run facts: counts add up, traces take the maximum."""

    def zero(self, value: dict[str, Any]) -> dict[str, Any]:
        return {}

    def addInPlace(self, total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 (Spark's name)
        for key, value in more.items():
            if isinstance(value, dict):
                into = total.setdefault(key, {})
                for name, count in value.items():
                    into[name] = into.get(name, 0) + count
            elif key == "traces":
                total[key] = max(total.get(key, 0), value)
            else:
                total[key] = total.get(key, 0) + value
        return total


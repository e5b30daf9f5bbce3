"""The Spark session for `engine: spark`: master, Arrow batches, and the executors' GPU settings.

The seed left GPU placement to luck (every executor saw every GPU, or the
user exported CUDA_VISIBLE_DEVICES by hand). Here `spark.gpuInUdf` decides:
false hides the GPUs from executors; true asks Spark's resource scheduling
for one GPU per executor and one per task, so each Python worker uses the
GPU Spark assigned it (`TaskContext.resources()`), with memory growth. The
seed's GPU-memory formula is gone: the worker measures its batch size.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gpubatch_jobs.predict.spark_s3 import classpath_conf, s3a_conf
from gpubatch_jobs.spec.kinds import SparkSpec

ARROW_BATCH_ROWS = 20_000


def spark_conf(spark: SparkSpec, *, app: str, backend: str, partitions: int,
               cluster: dict[str, str] | None = None) -> dict[str, str]:
    """`cluster`: spark_k8s.kubernetes_conf() when the executors are pods.

    The tenant's spec.spark.conf goes first and the engine's own settings over it: the
    keys it may not set are refused at admission (spec.kinds.SPARK_CONF_REFUSED), and
    should one slip through, ours still win. Driver and executors authenticate to each
    other (spark.authenticate: Spark makes a secret per application and hands it to its
    executors), so nothing else reaching the driver's ports can join the application.
    """
    conf = dict(spark.conf or {})
    conf.update({
        "spark.app.name": app,
        "spark.master": spark.local_master,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.python.worker.reuse": "true",  # the model stays loaded in each Python worker
        "spark.ui.enabled": "false",
        "spark.executorEnv.KERAS_BACKEND": backend,
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.authenticate": "true",
    })
    if spark.on_kubernetes or not spark.local_master.startswith("local"):
        conf["spark.executor.instances"] = str(spark.executor_count)
    if spark.gpu_in_udf:
        conf["spark.executor.resource.gpu.amount"] = "1"
        conf["spark.task.resource.gpu.amount"] = "1"  # one task (one model) per GPU at a time
        conf["spark.executorEnv.TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    else:
        conf["spark.executorEnv.CUDA_VISIBLE_DEVICES"] = ""
    # s3a:// (executor pods read and write s3:// themselves): the jars and where the server is.
    conf.update(classpath_conf())
    conf.update(s3a_conf())
    conf.update(cluster or {})
    return conf


def start_session(conf: dict[str, str]) -> Any:
    """A SparkSession with `conf` (an existing active session is reused, its conf left as it is)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()

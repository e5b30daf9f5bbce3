"""PredictJob: sliding-window inference with a TrainJob's model, locally or on Spark."""

from __future__ import annotations

from dataclasses import dataclass

from gpubatch_jobs.contract import KindInfo
from gpubatch_jobs.kinds import KindPlugin
from gpubatch_jobs.spec.kinds import PredictJob, PredictJobSpec


def predict_data_paths(spec: PredictJobSpec) -> list[str]:
    """Input, output and the model (a TrainJob's output): any may be on a claim."""
    return [spec.input.path, spec.output.path, spec.model]


@dataclass(frozen=True)
class SparkExecutorPods:
    """engine: spark with executors as pods (spec.spark.executors, or the cluster as master):
    the job pod is the Spark driver and runs as its own identity (builders/rbac.py)."""

    def makes_executor_pods(self, spec: PredictJobSpec) -> bool:
        return spec.engine == "spark" and spec.spark is not None and spec.spark.on_kubernetes


PLUGIN = KindPlugin(
    info=KindInfo("PredictJob", "predictjobs", "predictjob", "pj", "predict"),
    spec=PredictJobSpec,
    resource=PredictJob,
    engine="gpubatch_jobs.predict",
    data_paths=predict_data_paths,
    spark_driver=SparkExecutorPods(),
)

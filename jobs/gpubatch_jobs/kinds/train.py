"""TrainJob: a Keras model trained on a table or arrays; `workers` pods train as one group."""

from __future__ import annotations

from dataclasses import dataclass

from gpubatch_jobs.contract import KindInfo
from gpubatch_jobs.kinds import KindPlugin
from gpubatch_jobs.spec.kinds import TrainJob, TrainJobSpec


@dataclass(frozen=True)
class TrainWorkers:
    """spec.workers pods with TensorFlow's or JAX's multi-worker engine; batchSize is the
    global batch, so each worker takes batchSize / workers (the spec refuses a remainder)."""

    field: str = "workers"

    def size(self, spec: TrainJobSpec) -> int:
        return spec.workers

    def batch_per_worker(self, spec: TrainJobSpec) -> int | None:
        return spec.batch_size // spec.workers


PLUGIN = KindPlugin(
    info=KindInfo("TrainJob", "trainjobs", "trainjob", "tj", "train"),
    spec=TrainJobSpec,
    resource=TrainJob,
    engine="gpubatch_jobs.train",
    worker_group=TrainWorkers(),
)

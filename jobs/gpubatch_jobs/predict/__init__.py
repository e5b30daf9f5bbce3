"""PredictJob engine: label every row of every document with a TrainJob's rnn model.

    run(spec, ctx) -> summary dict

Modules, one job each: `settings` (spec over artifact), `model` (load and
check the artifact), `table` (read rows, group documents, check positions),
`windows` (plan, gather, average), `runner` (one compiled model call per
batch shape), `batching` (the batch loop and `batchSize: auto`), `local` and
`spark` (the two engines), `output` (atomic Parquet/HDF5), `job` (the
pipeline). Heavy imports happen inside `run`, never at import time.
"""

from __future__ import annotations

from typing import Any


def run(spec: Any, ctx: Any) -> dict[str, Any]:
    from gpubatch_jobs.predict.job import run_predict_job

    return run_predict_job(spec, ctx)


__all__ = ["run"]

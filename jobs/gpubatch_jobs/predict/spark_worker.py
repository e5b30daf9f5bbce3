"""What runs inside each Spark Python worker: the model, loaded once, and the partition loop.

`predict_partition` is the `mapInPandas` function. Rows arrive sorted by
document then position (the driver repartitions by document id), in Arrow
batches that may split a document; the rows of the last document of a batch
are held back until its end is seen, and whole documents are gathered into
chunks of about `CHUNK_ROWS` rows before running the same code as the local
engine (`predict_documents`), so the results match it.

The worker state (device, model, compiled batch functions, chosen batch
size) is built on first use and kept for the life of the Python worker
(`spark.python.worker.reuse`), so every task after the first starts at once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubatch_jobs.contract import DeviceInstruction

CHUNK_ROWS = 65_536
BAD_INPUT_MARKER = "gpubatch-bad-input: "


@dataclass(frozen=True)
class WorkerConfig:
    model_dir: str
    settings: Any  # PredictSettings
    instruction: DeviceInstruction
    gpu_in_udf: bool
    threads: int  # TensorFlow intra-op threads per worker (cores / concurrent tasks)


_STATE: dict[str, Any] = {}


def _worker_state(config: WorkerConfig) -> dict[str, Any]:
    key = f"{config.model_dir}|{config.settings}|{config.instruction}|{config.gpu_in_udf}"
    if _STATE.get("key") == key:
        return _STATE
    instruction = config.instruction
    if not config.gpu_in_udf:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        instruction = DeviceInstruction("cpu")
    else:
        assigned = _assigned_gpus()
        if assigned is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(assigned)
    from gpubatch_jobs.predict.device import prepare_device

    choice, backend = prepare_device(instruction)
    if backend == "tensorflow" and not choice.is_gpu:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(config.threads)
            tf.config.threading.set_inter_op_parallelism_threads(config.threads)
        except RuntimeError:  # already initialised in this worker
            pass
    from gpubatch_jobs.predict.batching import ModelCache
    from gpubatch_jobs.predict.local import model_factory
    from gpubatch_jobs.predict.model import load_sequence_model

    seq = load_sequence_model(_model_folder(config.model_dir))
    _STATE.clear()
    _STATE.update(key=key, seq=seq, choice=choice, backend=backend, settings=config.settings,
                  cache=ModelCache(model_factory(seq, config.settings, backend, choice.is_gpu)))
    return _STATE


def _model_folder(location: str) -> Any:
    """The model folder; an s3:// one (executor pods) is downloaded to this pod's scratch once."""
    from pathlib import Path

    from gpubatch_jobs.predict.spark_s3 import is_s3
    from gpubatch_jobs.storage import local_input_dir

    return local_input_dir(location.rstrip("/"), field_name="spec.model") if is_s3(location) else Path(location)


def _assigned_gpus() -> list[str] | None:
    """The GPU addresses Spark's resource scheduling gave this task, if it gave any."""
    from pyspark import TaskContext

    context = TaskContext.get()
    resources = context.resources() if context is not None else {}
    gpu = resources.get("gpu")
    return list(gpu.addresses) if gpu is not None and gpu.addresses else None


def predict_partition(config: WorkerConfig, batches: Iterator[Any], stats: Any = None) -> Iterator[Any]:
    """mapInPandas body: pandas batches of (id, position, features) in, prediction rows out."""
    import pandas as pd

    held: list[Any] = []
    held_rows = 0
    id_column = config.settings.id_column
    for batch in batches:
        if batch.empty:
            continue
        held.append(batch)
        held_rows += len(batch)
        if held_rows < CHUNK_ROWS:
            continue
        frame = pd.concat(held, ignore_index=True)
        # Keep the last document back: its rows may continue in the next batch.
        last = frame[id_column].iloc[-1]
        cut = int(np.flatnonzero(frame[id_column].to_numpy() != last)[-1]) + 1 if (frame[id_column] != last).any() else 0
        held, held_rows = [frame.iloc[cut:]], len(frame) - cut
        if cut:
            yield _predict_frame(config, frame.iloc[:cut], stats)
    if held_rows:
        yield _predict_frame(config, pd.concat(held, ignore_index=True), stats)


def _predict_frame(config: WorkerConfig, frame: Any, stats: Any) -> Any:
    import pandas as pd

    from gpubatch_jobs.errors import BadInput

    try:
        return _predict_frame_checked(config, frame, stats, pd)
    except BadInput as err:
        # Exceptions cross the JVM as text; the driver turns this marker back into BadInput.
        raise RuntimeError(f"{BAD_INPUT_MARKER}{err}") from None


def _predict_frame_checked(config: WorkerConfig, frame: Any, stats: Any, pd: Any) -> Any:
    from gpubatch_jobs.predict.local import predict_documents
    from gpubatch_jobs.predict.output import result_columns
    from gpubatch_jobs.predict.table import group_documents

    state = _worker_state(config)
    settings = state["settings"]
    position = settings.position_column
    features = frame[settings.features].to_numpy(dtype=np.float64)
    ids = frame[settings.id_column].to_numpy()
    positions = frame[position].to_numpy() if position else None
    docs = group_documents(ids, positions, features)
    started = time.perf_counter()
    probabilities, facts = predict_documents(docs, state["seq"], settings, backend=state["backend"],
                                             gpu=state["choice"].is_gpu, cache=state["cache"])
    if settings.batch == "auto":  # measured once per worker, then kept
        state["settings"] = settings = dataclasses.replace(settings, batch=facts["batchSize"])
    if stats is not None:
        stats.add({
            "windows": facts["windows"], "modelSeconds": facts["modelSeconds"],
            "seconds": time.perf_counter() - started, "rows": docs.n_rows,
            "batchSizes": {str(facts["batchSize"]): 1}, "devices": {state["choice"].device: 1},
            "oomBackoffs": facts["oomBackoffs"], "traces": facts["traces"],
        })
    columns = result_columns(docs.ids, docs.positions, probabilities, state["seq"].prep.classes,
                             settings.id_column, position or "position")
    return pd.DataFrame(columns)

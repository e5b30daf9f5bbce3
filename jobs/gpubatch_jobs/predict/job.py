"""The PredictJob pipeline: check everything that can be checked, predict, publish.

Order matters for "no partial output" and for failing fast: the output
target, the artifact's files (preprocessing.json and the model's config, read
without any framework) and the settings are checked before TensorFlow is
imported (several seconds); the result is published by rename only when
complete (an object-store result is then uploaded whole; storage.Place).

The whole input is read and checked while a warm-up thread imports the
framework, loads the model and compiles it for the first batch size (`Warmup`):
the two take seconds each and overlap. A bad input still fails at once: the
error does not wait for the import (the process ends without it, see
`gpubatch_jobs.shutdown`). In the summary, `importSeconds`, `loadSeconds` and
`compileSeconds` are the warm-up's own; `waitSeconds` is what the job waited
for it once the input was ready.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from gpubatch_jobs.errors import BadInput, excerpt
from gpubatch_jobs.predict.device import prepare_device
from gpubatch_jobs.predict.model import inspect_artifact, load_sequence_model
from gpubatch_jobs.predict.output import check_target, result_columns, write_predictions
from gpubatch_jobs.predict.settings import PredictSettings, resolve_settings
from gpubatch_jobs.predict.table import (
    Documents,
    check_columns,
    column_names,
    group_documents,
    read_columns,
    row_count,
    table_format,
)
from gpubatch_jobs.quiet import framework_import, release_native_stderr
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.shutdown import BACKGROUND_PREFIX
from gpubatch_jobs.spec.kinds import PredictJobSpec
from gpubatch_jobs.storage import Place

log = logging.getLogger("gpubatch.predict")


def run_predict_job(spec: PredictJobSpec, ctx: RunContext) -> dict[str, Any]:
    started = time.perf_counter()
    _check_spark_on_kubernetes_paths(spec)
    place, name = ctx.output_file(spec.output.path, field_name="spec.output.path")
    output = place.path(name)
    if place.is_remote:
        # object store: the result is written in scratch and uploaded whole at the end (both engines).
        check_target_url(place, name, spec.output.overwrite)
        output.unlink(missing_ok=True)
    else:
        check_target(output, spec.output.overwrite)
    model_dir = ctx.input_dir(spec.model, field_name="spec.model")
    input_path = ctx.input_file(spec.input.path, field_name="spec.input.path")
    instruction = ctx.device_instruction()
    if spec.engine == "spark":
        from gpubatch_jobs.predict.spark import run_spark

        summary = run_spark(spec, ctx, model_dir=model_dir, input_path=input_path, output=output,
                            instruction=instruction, place=place)
    else:
        summary = _run_local(spec, ctx, model_dir, input_path, output, instruction, started, place, name)
    place.push(name)
    if spec.engine != "spark":
        from gpubatch_jobs.predict.resume import discard_chunks

        discard_chunks(place, name)  # the result is published whole: the kept chunks have served
    summary["output"] = place.show(output)
    place.finish()
    return summary


def _check_spark_on_kubernetes_paths(spec: PredictJobSpec) -> None:
    """Executor pods read the input and the model and write parts themselves: an s3:// path needs the
    Secret's keys in their environment and the s3a jars in the image (spark_s3.py); refuse at once
    what they could not read rather than fail in the executors."""
    if spec.engine != "spark" or spec.spark is None or not spec.spark.on_kubernetes:
        return
    from gpubatch_jobs.predict.spark_s3 import check_executor_access

    check_executor_access({"spec.input.path": spec.input.path, "spec.model": spec.model,
                           "spec.output.path": spec.output.path})


def check_target_url(place: Place, name: str, overwrite: bool) -> None:
    if not overwrite and place.remote_exists(name):
        raise BadInput("output already exists; set spec.output.overwrite: true to replace it", path=place.url(name))


def _run_local(spec: PredictJobSpec, ctx: RunContext, model_dir: Any, input_path: Any, output: Any,
               instruction: Any, started: float, place: Place, name: str) -> dict[str, Any]:
    info = inspect_artifact(model_dir)
    settings = resolve_settings(spec, info, output)
    _configure_verbosity(settings.verbosity)
    fmt = table_format(input_path, spec.input.format)
    # What the file's schema and metadata tell, before the warm-up starts: its columns, its row count.
    check_columns(input_path, column_names(input_path, fmt, spec.input.dataset), wanted_columns(settings))
    n_rows = row_count(input_path, fmt, spec.input.dataset)
    if n_rows == 0:
        raise BadInput("the input has no rows: nothing to predict", field="spec.input.path")
    warmup = Warmup(instruction, info, settings, n_rows)
    with framework_import():  # fd 2 stays quiet while the thread imports; released at once on an error
        try:
            warmup.start()
            docs = read_documents(input_path, fmt, spec.input.dataset, settings)
            if docs.columns is not None:
                info.prep.check_finite_columns(dict(zip(settings.features, docs.columns, strict=True)))
            else:
                assert docs.features is not None
                info.prep.check_finite(docs.features, settings.features)
            stages = {"checkSeconds": time.perf_counter() - started}
            mark = time.perf_counter()
            choice, backend, seq, cache = warmup.result()
        except BaseException:
            release_native_stderr()
            raise
    stages["waitSeconds"] = time.perf_counter() - mark
    stages.update(warmup.seconds)

    from gpubatch_jobs import preempt
    from gpubatch_jobs.predict.local import chunks, predict_documents
    from gpubatch_jobs.predict.resume import ChunkStore, work_fingerprint

    # Finished chunks are kept beside the output until it is published (predict/resume.py): on
    # SIGTERM the run stops after the batch in flight, and the next run predicts only the rest.
    ranges = chunks(docs, settings.chunk_rows)
    store = ChunkStore(place, name, work_fingerprint(spec, input_path, model_dir, docs.n_rows, ranges), len(ranges))
    with preempt.graceful():
        probabilities, facts = predict_documents(docs, seq, settings, backend=backend, gpu=choice.is_gpu, ctx=ctx,
                                                 cache=cache, store=store, ranges=ranges)
    # windows planned and rows scaled per chunk, outside the timed model loop
    prepare_seconds = max(0.0, facts["predictSeconds"] - facts["modelSeconds"] - facts["probeSeconds"]
                          - facts["compileSeconds"])
    facts["compileSeconds"] += stages.pop("compileSeconds", 0.0)  # the warm-up's compile
    mark = time.perf_counter()
    columns = result_columns(docs.ids, docs.positions, probabilities, seq.prep.classes, settings.id_column,
                             settings.position_column or "position")
    # Back to the input's row order.
    inverse = docs.order.argsort()
    columns = {name: values[inverse] for name, values in columns.items()}
    write_predictions(columns, output, settings.output_format)
    stages["writeSeconds"] = time.perf_counter() - mark
    elapsed = time.perf_counter() - started
    windows = facts["windows"]
    return {
        "ok": True,
        "engine": "local",
        "device": choice.device,
        "backend": backend,
        "deviceReason": choice.reason,
        "fallbacks": [choice.reason] if choice.fell_back else [],
        "batchSize": facts["batchSize"],
        "batchSizeProbes": facts["batchSizeProbes"],
        "batchSizeReason": facts["batchSizeReason"],
        "windowSize": settings.window,
        "stride": settings.stride,
        "items": {"rows": docs.n_rows, "documents": docs.n_documents, "windows": windows},
        # windowsPerSecond: the model loop alone (compile and probe excluded), the same in every mode;
        # windowsPerSecondEndToEnd: the whole job from the spec to the published file, import included.
        "throughput": facts["windowsPerSecond"],
        "windowsPerSecond": facts["windowsPerSecond"],
        "windowsPerSecondEndToEnd": round(windows / elapsed, 1) if elapsed else None,
        "rowsPerSecond": round(docs.n_rows / elapsed, 1) if elapsed else None,
        "modelSeconds": facts["modelSeconds"],
        "seconds": {**{key: round(value, 3) for key, value in stages.items()},
                    "probeSeconds": facts["probeSeconds"], "compileSeconds": facts["compileSeconds"],
                    "modelSeconds": facts["modelSeconds"],
                    "prepareSeconds": round(prepare_seconds, 3)},
        "traces": facts["traces"],
        "compiledShapes": facts["compiledShapes"],
        "oomBackoffs": facts["oomBackoffs"],
        "chunks": facts["chunks"],
        "resumedChunks": facts["resumedChunks"],
        "classes": list(seq.prep.classes),
        "output": str(output),
        "outputFormat": settings.output_format,
        "elapsedSeconds": round(elapsed, 3),
    }


class Warmup:
    """The framework's import, the model's load and its first compile, on a thread while the input is read.

    The first compile is for the size the job starts with (`spec.batchSize`,
    or the first `auto` probe) and for chunks of the row count the input's
    metadata gives; without one (CSV) the compile waits for the rows.
    `result()` waits and re-raises what the thread raised (a GPU that cannot
    be used, an unloadable model), exactly as if it had run in line.
    """

    def __init__(self, instruction: Any, info: Any, settings: PredictSettings, n_rows: int | None) -> None:
        self.instruction, self.info, self.settings, self.n_rows = instruction, info, settings, n_rows
        self.seconds: dict[str, float] = {}
        self._outcome: tuple[Any, ...] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=BACKGROUND_PREFIX + "predict-warmup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            mark = time.perf_counter()
            choice, backend = prepare_device(self.instruction)
            self.seconds["importSeconds"] = time.perf_counter() - mark
            mark = time.perf_counter()
            seq = load_sequence_model(self.info)
            self.seconds["loadSeconds"] = time.perf_counter() - mark
            from gpubatch_jobs.predict.batching import FIRST_PROBE, ModelCache
            from gpubatch_jobs.predict.local import expected_capacity, model_factory, precompile

            cache = ModelCache(model_factory(seq, self.settings, backend, choice.is_gpu))
            capacity = expected_capacity(self.n_rows, self.settings.chunk_rows)
            if capacity is not None:
                batch = self.settings.batch if self.settings.batch != "auto" else FIRST_PROBE
                self.seconds["compileSeconds"] = precompile(cache, int(batch), self.settings.window,
                                                            seq.n_features, capacity)
            self._outcome = (choice, backend, seq, cache)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread by result()
            self._error = err

    def result(self) -> tuple[Any, ...]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome


def read_documents(path: Any, fmt: str, dataset: str | None, settings: PredictSettings) -> Documents:
    """The input's rows grouped by document, features in grouped order.

    A file already in grouped order (the usual case) keeps its feature
    columns in the reader's buffers (Parquet row groups), and each chunk is
    scaled straight from them; otherwise the features are copied once, column
    by column, into one column-major matrix in grouped order.
    """
    keys = [settings.id_column] + ([settings.position_column] if settings.position_column else [])
    columns = read_columns(path, fmt, wanted_columns(settings), dataset, chunked=True)
    import numpy as np

    for name in settings.features:
        if any(part.dtype.kind not in "iufb" for part in columns[name]):
            try:
                columns[name] = [np.asarray(part, dtype=np.float64) for part in columns[name]]
            except (TypeError, ValueError) as err:
                raise BadInput(f"feature column {excerpt(name)} is not numeric ({excerpt(err, 80)})", field="spec.input.features") from err
    # float32 input stays float32 (half the memory); anything else becomes float64. The scaling
    # (Preprocessing.transform) computes in float64 either way, so results do not depend on this.
    kinds = {part.dtype for name in settings.features for part in columns[name]}
    dtype = np.float32 if kinds == {np.dtype(np.float32)} else np.float64
    ids = _joined(columns[settings.id_column])
    positions = _joined(columns[settings.position_column]) if settings.position_column else None
    n_rows = len(ids)
    docs = group_documents(ids, positions, np.empty((n_rows, 0), dtype))
    if np.array_equal(docs.order, np.arange(n_rows)):
        # Already grouped: chunks take their rows straight from the reader's buffers.
        docs.features = None
        docs.columns = [columns[name] for name in settings.features]
        return docs
    features = np.empty((n_rows, len(settings.features)), dtype, order="F")
    for j, name in enumerate(settings.features):
        parts = columns.pop(name) if name not in keys else columns[name]
        features[:, j] = _joined(parts)[docs.order]
    docs.features = features
    return docs


def wanted_columns(settings: PredictSettings) -> list[str]:
    """The id, the position (if any) and the feature columns, each once."""
    keys = [settings.id_column] + ([settings.position_column] if settings.position_column else [])
    return keys + [name for name in settings.features if name not in keys]


def _joined(parts: list[Any]) -> Any:
    import numpy as np

    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _configure_verbosity(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}[verbosity]
    logging.getLogger("gpubatch.predict").setLevel(level)

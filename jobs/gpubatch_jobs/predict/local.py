"""`engine: local`: read, window, predict and write in this process.

Documents are processed in chunks of whole documents (at most `CHUNK_ROWS`
rows) so memory stays bounded however large the input; every chunk reuses the
one compiled model of the chosen batch size. XLA compiles a function once per
input shape, and the chunk's rows are an input, so every chunk's scaled rows
are padded to one row count (`feature_capacity`): a job compiles its model
once, not once per chunk (about 2 s each on a CPU).

A chunk is also the unit a preemption keeps: with a `ChunkStore`
(predict/resume.py) every finished chunk is saved, chunks saved by an earlier
run are read instead of predicted, and on SIGTERM the run stops after the
batch in flight (gpubatch_jobs.preempt). `spec.chunkRows` sets the rows of a
chunk (default CHUNK_ROWS, 1048576): smaller chunks lose less work to a
preemption and cost a little more per chunk.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gpubatch_jobs import preempt
from gpubatch_jobs.predict.batching import (
    ModelCache,
    RunStats,
    choose_batch_size,
    predict_plan,
    warm,
)
from gpubatch_jobs.predict.model import SequenceModel
from gpubatch_jobs.predict.runner import CompiledModel
from gpubatch_jobs.predict.settings import PredictSettings
from gpubatch_jobs.predict.table import Documents
from gpubatch_jobs.predict.windows import plan_windows, window_counts
from gpubatch_jobs.runtime import RunContext

if TYPE_CHECKING:
    from gpubatch_jobs.predict.resume import ChunkStore


CHUNK_ROWS = 1 << 20


def chunks(docs: Documents, max_rows: int | None = None) -> list[tuple[int, int]]:
    """(first document, end document) ranges of whole documents, about max_rows (CHUNK_ROWS) rows each."""
    max_rows = max_rows or CHUNK_ROWS
    ends = np.cumsum(docs.doc_lengths)
    out, first = [], 0
    while first < docs.n_documents:
        base = ends[first - 1] if first else 0
        last = int(np.searchsorted(ends, base + max_rows, side="right"))
        last = max(last, first + 1)
        out.append((first, last))
        first = last
    return out


def feature_capacity(docs: Documents, ranges: list[tuple[int, int]], max_rows: int | None = None) -> int:
    """The row count every chunk's features are padded to.

    One chunk: its own rows. Several: `CHUNK_ROWS` (or a larger single
    document's), which `expected_capacity` can tell from the row count alone,
    before the input is read.
    """
    ends = np.concatenate([[0], np.cumsum(docs.doc_lengths)])
    largest = int(max(ends[last] - ends[first] for first, last in ranges))
    return largest if len(ranges) == 1 else max(largest, max_rows or CHUNK_ROWS)


def expected_capacity(n_rows: int | None, max_rows: int | None = None) -> int | None:
    """`feature_capacity` from the input's row count (metadata), for compiling before the read ends."""
    if n_rows is None or n_rows <= 0:
        return None
    limit = max_rows or CHUNK_ROWS
    return n_rows if n_rows <= limit else limit


def scaled_rows(docs: Documents, seq: SequenceModel, row_lo: int, row_hi: int, capacity: int,
                buffer: np.ndarray | None = None) -> np.ndarray:
    """Rows [row_lo, row_hi) scaled to model input, in a (capacity, features) float32 array.

    `buffer` (the previous chunk's array) is reused when its shape fits: a
    fresh array of a few hundred MB costs more in page faults than the
    scaling itself. Rows past row_hi are padding no window reads.
    """
    shape = (max(capacity, row_hi - row_lo), seq.n_features)
    features = buffer if buffer is not None and buffer.shape == shape else np.zeros(shape, dtype=np.float32)
    seq.prep.transform_columns(docs.feature_columns(row_lo, row_hi), out=features[:row_hi - row_lo])
    return features


def model_factory(seq: SequenceModel, settings: PredictSettings, backend: str, gpu: bool):  # type: ignore[no-untyped-def]
    def build(batch: int) -> CompiledModel:
        return CompiledModel(seq.model, batch=batch, window=settings.window, n_features=seq.n_features,
                             backend=backend, gpu=gpu, pad_value=seq.prep.pad_value)

    return build


def precompile(cache: ModelCache, batch: int, window: int, n_features: int, capacity: int) -> float:
    """Compile the model of `batch` for chunks of `capacity` rows before any row is read; seconds taken."""
    started = time.perf_counter()
    model = cache.get(batch)
    cache.bind(model, np.zeros((capacity, n_features), dtype=np.float32))
    rows = np.zeros((batch, window), dtype=np.int32)
    try:
        model.fetch(model.launch(rows, np.ones((batch, window), dtype=bool)))
    except Exception as err:
        from gpubatch_jobs.devices import is_oom_error

        if not is_oom_error(err):
            raise
        cache.drop(batch)  # the batch-size backoff takes it from here, on the real rows
    return time.perf_counter() - started


def predict_documents(docs: Documents, seq: SequenceModel, settings: PredictSettings, *, backend: str, gpu: bool,
                      ctx: RunContext | None = None, cache: ModelCache | None = None,
                      store: ChunkStore | None = None, ranges: list[tuple[int, int]] | None = None,
                      ) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-row probabilities in grouped order, and run facts for the summary.

    Pass a `cache` to keep compiled models between calls (a Spark worker does),
    a `store` to keep finished chunks and reuse those of an earlier run.
    """
    total_windows = int(window_counts(docs.doc_lengths, settings.window, settings.stride).sum())
    probabilities = np.empty((docs.n_rows, seq.n_classes), dtype=np.float32)
    cache = cache or ModelCache(model_factory(seq, settings, backend, gpu))
    stats = RunStats()
    probes: list[dict[str, Any]] = []
    batch = settings.batch
    done = 0
    probe_seconds = compile_seconds = 0.0
    reason = "fixed by spec.batchSize"
    started = time.perf_counter()

    rows_kept = 0

    def stop_if_asked() -> None:
        if preempt.requested() and store is not None:
            checkpoint = store.checkpoint(rows_kept)
            if ctx is not None:
                ctx.progress(done, total_windows, stage="preempted: finished chunks saved", force=True,
                             checkpoint=checkpoint, preempted=True)
            raise preempt.stop(checkpoint)

    def advance(windows: int) -> None:
        nonlocal done
        done += windows
        if ctx is not None:
            ctx.progress(done, total_windows, stage="predict")
        stop_if_asked()  # after the batch in flight: the chunk's earlier batches are lost, its finished peers kept

    ranges = ranges or chunks(docs, settings.chunk_rows)
    saved = store.load() if store is not None else {}
    if ctx is not None:  # the first report counts the chunks kept by an earlier run: no fall back to 0%
        ctx.progress(sum(int(window_counts(docs.doc_lengths[first:last], settings.window, settings.stride).sum())
                         for index, (first, last) in enumerate(ranges) if index in saved),
                     total_windows, stage="predict", force=True)
    resumed = 0
    capacity = feature_capacity(docs, ranges, settings.chunk_rows)
    features: np.ndarray | None = None
    for index, (first, last) in enumerate(ranges):
        row_lo = int(docs.doc_starts[first])
        row_hi = int(docs.doc_starts[last - 1] + docs.doc_lengths[last - 1])
        kept = saved.pop(index, None)
        if kept is not None and kept.shape == (row_hi - row_lo, seq.n_classes):
            probabilities[row_lo:row_hi] = kept
            rows_kept += row_hi - row_lo
            resumed += 1
            done += int(window_counts(docs.doc_lengths[first:last], settings.window, settings.stride).sum())
            continue
        plan = plan_windows(docs.doc_starts[first:last] - row_lo, docs.doc_lengths[first:last],
                            settings.window, settings.stride)
        cache.release()  # the previous chunk's placed rows may alias the buffer refilled here
        features = scaled_rows(docs, seq, row_lo, row_hi, capacity, buffer=features)
        if batch == "auto":
            choice = choose_batch_size(cache, plan, features, gpu=gpu, job_windows=total_windows)
            batch, probes, reason, probe_seconds = choice.size, choice.probes, choice.reason, choice.seconds
            compile_seconds += choice.compile_seconds
        compile_seconds += warm(cache, int(batch), plan, features)
        probabilities[row_lo:row_hi] = predict_plan(cache, int(batch), plan, features, seq.n_classes,
                                                    on_batch=advance, stats=stats)
        batch = stats.batch_size  # an OOM backoff sticks for the following chunks
        if store is not None:
            store.save(index, probabilities[row_lo:row_hi])
            rows_kept += row_hi - row_lo
            if ctx is not None:  # like a TrainJob's epoch: status.checkpoint shows what a restart keeps
                ctx.progress(done, total_windows, stage="predict", force=True, checkpoint=store.checkpoint(rows_kept))
            stop_if_asked()
    elapsed = time.perf_counter() - started
    traces = sum(model.traces for model in cache.models.values())
    return probabilities, {
        "batchSize": stats.batch_size,
        "batchSizeProbes": probes,
        "batchSizeReason": reason,
        "windows": stats.windows,
        "batches": stats.batches,
        "modelSeconds": round(stats.seconds, 3),
        "probeSeconds": round(probe_seconds, 3),
        "compileSeconds": round(compile_seconds, 3),
        "predictSeconds": round(elapsed, 3),
        "windowsPerSecond": round(stats.windows / stats.seconds, 1) if stats.seconds else None,
        "oomBackoffs": stats.backoffs,
        "chunks": len(ranges),
        "resumedChunks": resumed,
        "traces": traces,
        # distinct (batch, rows) input shapes the compiled functions saw: XLA compiles once per shape
        "compiledShapes": len({shape for model in cache.models.values() for shape in model.shapes}),
    }

"""Run every window through the model in fixed-size batches, and pick that size.

`batchSize: auto` replaces the seed's tuning guide (start at 64, watch
nvidia-smi, try 96, drop to 48 on OOM) with a measurement that pays for
itself. A job of at most `SMALL_JOB_BATCHES` batches of `FIRST_PROBE` windows
is not probed at all (it runs at `FIRST_PROBE`). A larger one times
`FIRST_PROBE` on its own first windows, estimates the whole job's time from
that rate, and then tries doubling sizes only while the probing spent so far
plus the next size's expected cost stays within `PROBE_SHARE` (a tenth) of
that estimate; it also stops when throughput stops improving by `MIN_GAIN`,
at the cap, or when the device runs out of memory (the size that failed and
all larger ones are ruled out). A run that still hits an OOM later halves its
batch through `OomBackoff` and carries on from the last merged batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpubatch_jobs.devices import OomBackoff, is_oom_error
from gpubatch_jobs.predict.runner import CompiledModel
from gpubatch_jobs.predict.windows import RowAverager, WindowPlan

log = logging.getLogger("gpubatch.predict")

CPU_CAP = 1024
GPU_CAP = 16384
FIRST_PROBE = 256  # the size every job starts from (and small jobs keep)
MIN_GAIN = 1.05  # a doubling must bring 5% more windows/s to be worth its memory
PROBE_SECONDS = 0.25  # time each size for at least this long (after its warm-up call)
PROBE_BUDGET_SECONDS = 30.0
PROBE_SHARE = 0.1  # probing may cost at most this share of the job's estimated model time
SMALL_JOB_BATCHES = 16  # jobs of at most this many first-probe batches are not probed

ModelFactory = Callable[[int], CompiledModel]


class ModelCache:
    """One CompiledModel per batch size, so the size the probe chose is not traced again."""

    def __init__(self, factory: ModelFactory) -> None:
        self.factory = factory
        self.models: dict[int, CompiledModel] = {}
        self._source: np.ndarray | None = None
        self._placed: Any = None

    def bind(self, model: CompiledModel, features: np.ndarray) -> None:
        """Give `model` the chunk's rows, placed on the device once per chunk for every batch size."""
        if self._source is not features:
            self._placed = None  # free the previous chunk before placing the next
            self._placed, self._source = model.to_device(features), features
        model.use(self._placed)

    def release(self) -> None:
        """Forget the placed rows, so the next `bind` places its rows again (even the same array refilled)."""
        self._placed = self._source = None

    def get(self, batch: int) -> CompiledModel:
        if batch not in self.models:
            self.models[batch] = self.factory(batch)
        return self.models[batch]

    def drop(self, batch: int) -> None:
        self.models.pop(batch, None)


@dataclass
class BatchChoice:
    size: int
    probes: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0  # spent probing (timing runs, and compiles of sizes not chosen)
    compile_seconds: float = 0.0  # the chosen size's compile, done while probing


def padded(rows: np.ndarray, mask: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a short last batch with empty windows so every call has the same shape."""
    if rows.shape[0] == batch:
        return rows, mask
    pad = batch - rows.shape[0]
    return (np.concatenate([rows, np.zeros((pad, rows.shape[1]), rows.dtype)]),
            np.concatenate([mask, np.zeros((pad, mask.shape[1]), bool)]))


def choose_batch_size(cache: ModelCache, plan: WindowPlan, features: np.ndarray, *, gpu: bool,
                      cap: int | None = None, budget_s: float = PROBE_BUDGET_SECONDS,
                      clock: Callable[[], float] = time.perf_counter, job_windows: int | None = None,
                      ) -> BatchChoice:
    """Probe doubling batch sizes on the plan's first windows, within a tenth of the job's estimated time.

    `job_windows`: the whole job's windows when `plan` is only its first chunk.
    The first size's compile is not probing (the job needs one compile
    anyway): it is reported as `compile_seconds`, and the budget covers the
    timing runs and the other sizes' compiles.
    """
    job_windows = max(job_windows or 0, plan.n_windows)
    cap = cap or (GPU_CAP if gpu else CPU_CAP)
    # No point probing sizes far beyond the job: the whole job in one batch is the ceiling.
    ceiling = max(FIRST_PROBE, 1 << max(0, int(plan.n_windows - 1).bit_length()))
    cap = max(1, min(cap, ceiling))
    if job_windows <= SMALL_JOB_BATCHES * FIRST_PROBE:
        # Probing would cost more than it saves: the job is a few batches at any size.
        size = min(cap, max(FIRST_PROBE, 1 << max(0, int(-(-job_windows // SMALL_JOB_BATCHES) - 1).bit_length())))
        return BatchChoice(size=size, reason=f"small job ({job_windows} windows): not probed")
    best = BatchChoice(size=0)
    size = min(FIRST_PROBE, cap)
    first_size, first_compile = size, warm(cache, size, plan, features)
    started = clock()
    best_rate = 0.0
    allowed = budget_s
    last_cost = 0.0
    while True:
        probe_started = clock()
        try:
            rate = _probe(cache, plan, features, size)
        except Exception as err:
            if not is_oom_error(err):
                raise
            cache.drop(size)
            best.probes.append({"batchSize": size, "outOfMemory": True})
            if best.size:
                best.reason = f"out of memory at {size}"
                break
            # Even the first size does not fit: halve until one does.
            backoff = OomBackoff(start=max(1, size // 2))
            rate = backoff.run(lambda s: _probe(cache, plan, features, s))
            size = backoff.size
            best.probes.append({"batchSize": size, "windowsPerSecond": round(rate, 1)})
            best.size, best.reason = size, "largest size that fits"
            break
        last_cost = clock() - probe_started
        best.probes.append({"batchSize": size, "windowsPerSecond": round(rate, 1), "seconds": round(last_cost, 3)})
        if not best.size:
            # The first rate sets the budget: a tenth of the job's estimated time at this size.
            allowed = min(budget_s, PROBE_SHARE * job_windows / max(rate, 1e-9))
        if rate < best_rate * MIN_GAIN:
            best.reason = f"{size} was not {MIN_GAIN:.2f}x faster than {best.size}"
            break
        if rate > best_rate:
            best.size, best_rate = size, rate
        if size * 2 > cap:
            best.reason = f"reached the cap ({cap})"
            break
        # The next size costs a compile (at least the first size's) and a timing run like this one.
        if clock() - started + first_compile + last_cost > allowed:
            best.reason = (f"probing budget spent ({allowed:.2f}s: {PROBE_SHARE:.0%} of the job's estimated "
                           f"{job_windows / best_rate:.1f}s)" if allowed < budget_s
                           else f"probing budget ({budget_s:.0f}s) spent")
            break
        size *= 2
    for other in list(cache.models):
        if other != best.size:
            cache.drop(other)
    best.seconds = clock() - started
    if best.size == first_size:
        best.compile_seconds = first_compile
    else:  # the first size's compile went to waste: it was probing after all
        best.seconds += first_compile
    log.info("batch size %d (%s); probes: %s", best.size, best.reason, best.probes)
    return best


def warm(cache: ModelCache, batch: int, plan: WindowPlan, features: np.ndarray) -> float:
    """Trace/compile the model of `batch` with the plan's first windows; seconds it took (0 if done before).

    Run before the timed loop in every mode, so windows/s never includes the compile.
    """
    model = cache.get(batch)
    if model.calls:
        return 0.0
    started = time.perf_counter()
    cache.bind(model, features)
    rows, mask = padded(*plan.row_index(0, min(batch, plan.n_windows)), batch)
    try:
        model.fetch(model.launch(rows, mask))
    except Exception as err:
        if not is_oom_error(err):
            raise
        cache.drop(batch)  # predict_plan's backoff takes it from here
    return time.perf_counter() - started


def _probe(cache: ModelCache, plan: WindowPlan, features: np.ndarray, size: int) -> float:
    model = cache.get(size)
    cache.bind(model, features)
    hi = min(size, plan.n_windows)
    rows, mask = padded(*plan.row_index(0, hi), size)
    model.fetch(model.launch(rows, mask))  # trace / compile
    calls, start = 0, time.perf_counter()
    while True:
        model.fetch(model.launch(rows, mask))
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= PROBE_SECONDS and calls >= 2:
            return calls * size / elapsed


@dataclass
class RunStats:
    windows: int = 0
    batches: int = 0
    seconds: float = 0.0
    backoffs: int = 0
    batch_size: int = 0


def predict_plan(cache: ModelCache, batch: int, plan: WindowPlan, features: np.ndarray, n_classes: int,
                 on_batch: Callable[[int], None] | None = None, stats: RunStats | None = None) -> np.ndarray:
    """Per-row class probabilities (n_rows, n_classes) for a plan over `features` rows.

    Batches are launched one ahead of the merge, so a GPU computes batch i+1
    while the host merges batch i. An OOM halves the batch and resumes after
    the last merged batch.
    """
    stats = stats if stats is not None else RunStats()
    averager = RowAverager(plan, n_classes)
    done = 0
    started = time.perf_counter()

    def run_from_done(size: int) -> None:
        nonlocal done
        model = cache.get(size)
        cache.bind(model, features)
        pending: tuple[int, int, Any] | None = None
        for lo in range(done, plan.n_windows, size):
            hi = min(lo + size, plan.n_windows)
            handle = model.launch(*padded(*plan.row_index(lo, hi), size))
            if pending is not None:
                _merge(model, averager, pending)
                done = pending[1]
                if on_batch:
                    on_batch(pending[1] - pending[0])
            pending = (lo, hi, handle)
            stats.batches += 1
        if pending is not None:
            _merge(model, averager, pending)
            done = pending[1]
            if on_batch:
                on_batch(pending[1] - pending[0])

    def shrink(old: int, new: int) -> None:
        cache.drop(old)
        stats.backoffs += 1

    backoff = OomBackoff(start=batch, on_backoff=shrink)
    backoff.run(run_from_done)
    stats.batch_size = backoff.size
    stats.windows += plan.n_windows
    stats.seconds += time.perf_counter() - started
    return averager.mean()


def _merge(model: CompiledModel, averager: RowAverager, pending: tuple[int, int, Any]) -> None:
    lo, hi, handle = pending
    averager.add(lo, hi, model.fetch(handle))

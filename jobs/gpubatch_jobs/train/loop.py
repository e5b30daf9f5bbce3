"""The epoch loop: Keras `fit` with checkpoints, early stopping, progress and OOM backoff.

`fit` runs from the epoch after the last completed one to `spec.epochs`. After
every epoch a callback records the history, decides early stopping, keeps a
snapshot in memory and writes the checkpoint. An out-of-memory error halves
the batch size (OomBackoff) and resumes from the last snapshot, so the epoch
that failed is redone whole at the smaller size rather than counted twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubatch_jobs.devices import OomBackoff
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.train.checkpoints import CheckpointStore, TrainState, restore, snapshot
from gpubatch_jobs.train.dataset import TrainingData

log = logging.getLogger("gpubatch.train")


@dataclass
class FitResult:
    state: TrainState
    batch_size: int
    backoffs: int
    epochs_this_run: int
    seconds_this_run: float
    samples_this_run: int
    optimizer_restored: bool


def monitored_metric(data: TrainingData) -> str:
    return "val_loss" if data.n_val else "loss"


def fit(model: Any, data: TrainingData, spec: Any, ctx: RunContext, state: TrainState,
        store: CheckpointStore | None, checkpoint_extra: dict[str, Any], group: Any = None) -> FitResult:
    import keras

    if state.weights is None:
        state.weights, state.optimizer = snapshot(model)
        state.optimizer = None  # the optimizer is not built yet; a fresh one is what epoch 1 wants
    optimizer_restored = False
    first_epoch, run_started = state.epoch, time.monotonic()
    validation = None
    x_train, y_train, w_train = data.x_train, data.y_train, data.w_train
    if data.n_val:
        validation = (data.x_val, data.y_val) if data.w_val is None else (data.x_val, data.y_val, data.w_val)

    def attempt(batch_size: int) -> None:
        nonlocal optimizer_restored
        # A group's optimizer slots must be made in its strategy's scope.
        with group.scope() if group is not None else contextlib.nullcontext():
            restored = restore(model, state)
        optimizer_restored = optimizer_restored or restored
        if state.stopped_early or state.epoch >= spec.epochs:
            return
        recorder = epoch_recorder(data, spec, ctx, state, store, checkpoint_extra, batch_size)
        x, y, w, fit_batch = x_train, y_train, w_train, batch_size
        if group is not None:
            x, y, w, fit_batch = group.fit_data(x_train, y_train, w_train, batch_size)
        # One `fit` call per epoch, each seeded from (seed, epoch) alone: a run
        # resumed at epoch k then shuffles and drops out exactly as an
        # uninterrupted run does from epoch k on.
        while not state.stopped_early and state.epoch < spec.epochs:
            seed_epoch(keras, model, spec.seed, state.epoch)
            model.fit(
                x, y, sample_weight=w,
                validation_data=validation, batch_size=fit_batch,
                epochs=state.epoch + 1, initial_epoch=state.epoch,
                shuffle=True, verbose=0, callbacks=[recorder],
            )

    backoff = OomBackoff(start=spec.batch_size)
    if group is None:
        backoff.run(attempt)
    else:
        # Halving on one worker alone would leave the group out of step: an
        # out-of-memory error fails the worker, and the group restarts.
        attempt(spec.batch_size)
    epochs_run = state.epoch - first_epoch
    return FitResult(
        state=state, batch_size=backoff.size, backoffs=backoff.backoffs, epochs_this_run=epochs_run,
        seconds_this_run=time.monotonic() - run_started, samples_this_run=epochs_run * data.n_train,
        optimizer_restored=optimizer_restored,
    )


def seed_epoch(keras: Any, model: Any, seed: int, epoch: int) -> None:
    """Make epoch `epoch`'s randomness a function of (seed, epoch) only.

    The global seeds (Python, NumPy, the backend: the shuffle order) and every
    seed generator's state (dropout) are reset; without the latter a dropout
    layer's state would carry over from the previous epochs, which a resumed
    run never ran.
    """
    keras.utils.set_random_seed((seed * 1_000_003 + epoch) % 2**32)
    generators = [v for v in model.variables if v.name == "seed_generator_state"]
    for index, variable in enumerate(generators):
        value = np.array([(seed * 7_919 + epoch * 104_729 + index) % 2**31, 0])
        variable.assign(value.astype(variable.dtype))


def epoch_recorder(*args: Any) -> Any:
    """The per-epoch Keras callback (its class is made on first use, so keras loads only then)."""
    return _recorder_class()(*args)


_RECORDER: type | None = None


def _recorder_class() -> type:
    global _RECORDER
    if _RECORDER is not None:
        return _RECORDER
    import keras

    class _EpochRecorder(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self, data: TrainingData, spec: Any, ctx: RunContext, state: TrainState,
                     store: CheckpointStore | None, extra: dict[str, Any], batch_size: int) -> None:
            super().__init__()
            self.data, self.spec, self.ctx, self.state = data, spec, ctx, state
            self.store, self.extra, self.batch_size = store, extra, batch_size
            self.steps = max(1, math.ceil(data.n_train / batch_size))
            self.total = spec.epochs * self.steps
            self.monitor = monitored_metric(data)
            self.epoch_started = time.monotonic()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch_started = time.monotonic()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.ctx.progress(self.state.epoch * self.steps + batch + 1, self.total,
                              stage=f"epoch {self.state.epoch + 1}/{self.spec.epochs}")

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            state = self.state
            state.epoch = epoch + 1
            history = state.history
            history.setdefault("epoch", []).append(state.epoch)
            history.setdefault("seconds", []).append(round(time.monotonic() - self.epoch_started, 4))
            history.setdefault("batchSize", []).append(self.batch_size)
            for key, value in sorted(logs.items()):
                history.setdefault(key, []).append(float(value))
            self._early_stopping(logs)
            state.weights, state.optimizer = snapshot(self.model)
            if self.store is not None:
                self.store.save(state, self.extra)
            stage = f"epoch {state.epoch}/{self.spec.epochs} " + " ".join(
                f"{k}={float(v):.4f}" for k, v in sorted(logs.items()) if "loss" in k or "accuracy" in k)
            self.ctx.progress(state.epoch * self.steps, self.total, stage=stage, force=True)
            log.info("%s", stage)

        def _early_stopping(self, logs: dict[str, Any]) -> None:
            patience = self.spec.early_stopping_patience
            value = logs.get(self.monitor)
            if patience is None or value is None:
                return
            state = self.state
            if state.best is None or value < state.best:
                state.best, state.wait = float(value), 0
                return
            state.wait += 1
            if state.wait >= patience:
                state.stopped_early = True
                self.model.stop_training = True
                log.info("early stopping after epoch %d: %s has not improved for %d epochs",
                         state.epoch, self.monitor, patience)

    _RECORDER = _EpochRecorder
    return _RECORDER

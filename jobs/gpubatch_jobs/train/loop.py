"""The epoch loop: Keras `fit` with checkpoints, early stopping, progress and OOM backoff.

`fit` runs from the epoch after the last completed one to `spec.epochs`. After
every epoch a callback records the history, decides early stopping, keeps a
snapshot in memory and writes the checkpoint. An out-of-memory error halves
the batch size (OomBackoff) and resumes from the last snapshot, so the epoch
that failed is redone whole at the smaller size rather than counted twice.

Each epoch trains on its own seeded order of the samples (`epoch_order`, a
function of (seed, epoch) only), fed to Keras unshuffled. On SIGTERM
(gpubatch_jobs.preempt) the callback lets the step in flight finish, then
writes a step-level checkpoint (weights, optimizer, steps done, the dropout
seed states, the epoch's running metric sums) and stops with exit 143; the
next run restores all of it and trains on the rest of that same order, so
its weights equal an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubatch_jobs import preempt
from gpubatch_jobs.devices import OomBackoff
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.train.checkpoints import (
    CheckpointStore,
    TrainState,
    assign_all,
    metric_states,
    restore,
    seed_states,
    seed_variables,
    snapshot,
    sync_from_device,
)
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
        recorder = epoch_recorder(data, spec, ctx, state, store, checkpoint_extra, batch_size, group)
        # One `fit` call per epoch, each on an order seeded from (seed, epoch)
        # alone: a run resumed at epoch k (or at step s of epoch k) then sees
        # the same batches and drops out exactly as an uninterrupted run does.
        while not state.stopped_early and state.epoch < spec.epochs:
            seed_epoch(keras, model, spec.seed, state.epoch)
            start = 0
            if state.step:  # a step-level checkpoint: carry on at the next batch of this epoch's order
                start = min(state.samples_done, data.n_train)
                if state.seeds is not None:
                    assign_all(seed_variables(model), state.seeds, "seed states")
            order = epoch_order(spec.seed, state.epoch, data.n_train)[start:]
            x = y = w = None  # the previous epoch's copy goes before this one is made
            x, y = x_train[order], y_train[order]
            w = None if w_train is None else w_train[order]
            fit_batch = batch_size
            if group is not None:
                x, y, w, fit_batch = group.fit_data(x, y, w, batch_size)
            recorder.begin(start)
            model.fit(
                x, y, sample_weight=w,
                validation_data=validation, batch_size=fit_batch,
                epochs=state.epoch + 1, initial_epoch=state.epoch,
                shuffle=False, verbose=0, callbacks=[recorder],
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


def add_metric_sums(model: Any, saved: list[np.ndarray]) -> bool:
    """Add a checkpoint's running metric sums (Mean-style `total`/`count` variables) to the model's."""
    variables = list(model.metrics_variables)
    additive = all(v.path.rsplit("/", 1)[-1] in ("total", "count") for v in variables)
    if not additive or len(variables) != len(saved) or any(
            tuple(v.shape) != a.shape for v, a in zip(variables, saved, strict=True)):
        log.warning("the epoch's metrics at the checkpoint cannot be carried over; the history entry of "
                    "the resumed epoch covers only the steps after it")
        return False
    for variable, array in zip(variables, saved, strict=True):
        variable.assign(variable.numpy() + array.astype(variable.dtype))
    return True


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training samples in epoch `epoch` (0-based): a function of (seed, epoch, n) only."""
    return np.random.default_rng([seed, epoch, 0x9E3779B9]).permutation(n)


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


# A worker group checks whether any worker was told to stop every this many steps (one small
# all-reduce each time): it stops at most this many steps after the signal, and loses none of them.
AGREE_EVERY_STEPS = 10


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
                     store: CheckpointStore | None, extra: dict[str, Any], batch_size: int,
                     group: Any = None) -> None:
            super().__init__()
            self.data, self.spec, self.ctx, self.state = data, spec, ctx, state
            # A group agrees on a step to stop at only where SIGTERM waits for it (preempt.graceful).
            self.group = group if preempt.active() else None
            self.store, self.extra, self.batch_size = store, extra, batch_size
            self.steps = max(1, math.ceil(data.n_train / batch_size))
            self.total = spec.epochs * self.steps
            self.monitor = monitored_metric(data)
            self.epoch_started = time.monotonic()
            self.step_offset = 0  # steps of this epoch done before this `fit` call (a step-level resume)
            self.seconds_before = 0.0

        def begin(self, samples_done: int) -> None:
            """Called before each epoch's `fit`: where in the epoch's order it starts."""
            self.step_offset = samples_done // self.batch_size
            self.seconds_before = self.state.epoch_seconds if samples_done else 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch_started = time.monotonic()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if batch == 0 and self.step_offset and self.state.metrics is not None:
                # The compiled metrics exist only once a step has run: add the sums of the
                # steps before the checkpoint to those of this first step.
                add_metric_sums(self.model, self.state.metrics)
            done = self.step_offset + batch + 1
            self.ctx.progress(self.state.epoch * self.steps + done, self.total,
                              stage=f"epoch {self.state.epoch + 1}/{self.spec.epochs}")
            # The last step of an epoch leads to the epoch's own checkpoint (on_epoch_end).
            if done >= self.steps:
                return
            if self.group is None:
                if preempt.requested():
                    self._stop_mid_epoch(done)
            elif done % AGREE_EVERY_STEPS == 0 and self.group.agree_to_stop(preempt.requested()):
                self._stop_mid_epoch(done)  # every worker stops after this same step

        def _stop_mid_epoch(self, done: int) -> None:
            """SIGTERM: the step in flight is done; save where the epoch stands and stop."""
            state = self.state
            if self.store is None:  # checkpoints: false, or a worker other than 0
                raise preempt.stop()
            sync_from_device(self.model)
            state.step, state.step_batch_size = done, self.batch_size
            state.weights, state.optimizer = snapshot(self.model)
            # A group's metric variables are reduced across the workers when read (a collective
            # the others, already stopping, would not join): its resumed epoch's history entry
            # covers the steps after the checkpoint only.
            state.seeds = seed_states(self.model)
            state.metrics = metric_states(self.model) if self.group is None else None
            state.epoch_seconds = self.seconds_before + time.monotonic() - self.epoch_started
            checkpoint = self.store.save(state, self.extra)
            since = preempt.seconds_since_request()
            log.info("SIGTERM: saved a checkpoint after step %d of epoch %d (%s)", done, state.epoch + 1,
                     f"{since:.1f} s after the signal" if since is not None else "another worker got the signal")
            self.ctx.progress(state.epoch * self.steps + done, self.total, stage="preempted: checkpoint saved",
                              force=True, checkpoint=checkpoint, preempted=True)
            raise preempt.stop(checkpoint)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            state = self.state
            state.epoch = epoch + 1
            seconds = self.seconds_before + time.monotonic() - self.epoch_started
            state.clear_step()
            self.step_offset, self.seconds_before = 0, 0.0
            history = state.history
            history.setdefault("epoch", []).append(state.epoch)
            history.setdefault("seconds", []).append(round(seconds, 4))
            history.setdefault("batchSize", []).append(self.batch_size)
            for key, value in sorted(logs.items()):
                history.setdefault(key, []).append(float(value))
            self._early_stopping(logs)
            state.weights, state.optimizer = snapshot(self.model)
            checkpoint = self.store.save(state, self.extra) if self.store is not None else None
            stage = f"epoch {state.epoch}/{self.spec.epochs} " + " ".join(
                f"{k}={float(v):.4f}" for k, v in sorted(logs.items()) if "loss" in k or "accuracy" in k)
            stopping = preempt.requested() if self.group is None else self.group.agree_to_stop(preempt.requested())
            extra: dict[str, Any] = {"checkpoint": checkpoint} if checkpoint else {}
            if stopping:
                extra["preempted"] = True
            self.ctx.progress(state.epoch * self.steps, self.total, stage=stage, force=True, **extra)
            log.info("%s", stage)
            if stopping:  # SIGTERM during the epoch's last steps: its checkpoint is the one
                raise preempt.stop(checkpoint)

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

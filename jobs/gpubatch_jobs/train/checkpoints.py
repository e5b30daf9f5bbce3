"""Checkpoints, written atomically, so a restarted pod resumes where it stopped.

    checkpoints/latest.json                 the commit point: epoch, step, history, early-stopping state
    checkpoints/epoch-0003/                 model.weights.npz + optimizer.npz after epoch 3
    checkpoints/epoch-0003-step-000120/     the same after 120 steps of epoch 4 (written on SIGTERM),
                                            plus rng.npz (the dropout seed states) and metrics.npz
                                            (the epoch's running metric sums, so its history entry is whole)

One is written after every epoch; a step-level one when the pod is told to
stop (SIGTERM: preempted, evicted, deleted) in the middle of an epoch. The
position in the epoch's seeded order is `step` x `stepBatchSize` samples, so
the next run carries on at the next batch of the same order.

An epoch's folder is written under a temporary name and renamed; only then is
latest.json replaced (os.replace) to point at it, and older folders go. A
kill at any moment leaves latest.json naming a complete folder, so the next
run starts at the epoch after it: no epoch lost, none repeated. The arrays are
plain numpy, independent of the Keras backend that wrote them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.artifacts import CHECKPOINT_DIR, write_text_atomic
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.storage import Place

log = logging.getLogger("gpubatch.train")

LATEST = "latest.json"
WEIGHTS = "model.weights.npz"
OPTIMIZER = "optimizer.npz"
SEEDS = "rng.npz"
METRICS = "metrics.npz"


def fingerprint(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrainState:
    """Where training stands after `epoch` completed epochs and `step` steps of the next."""

    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float | None = None
    wait: int = 0
    stopped_early: bool = False
    weights: list[np.ndarray] | None = None
    optimizer: list[np.ndarray] | None = None
    # Mid-epoch (a step-level checkpoint): steps done in epoch `epoch + 1`, at which batch size,
    # the dropout seed states and running metric sums then, and the epoch's seconds so far.
    step: int = 0
    step_batch_size: int = 0
    seeds: list[np.ndarray] | None = None
    metrics: list[np.ndarray] | None = None
    epoch_seconds: float = 0.0

    @property
    def samples_done(self) -> int:
        """Samples of epoch `epoch + 1`'s seeded order already trained on."""
        return self.step * self.step_batch_size

    def clear_step(self) -> None:
        self.step, self.step_batch_size, self.seeds, self.metrics, self.epoch_seconds = 0, 0, None, None, 0.0

    def to_json(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "history": self.history,
                                "best": self.best, "wait": self.wait, "stoppedEarly": self.stopped_early}
        if self.step:
            meta.update(stepBatchSize=self.step_batch_size, epochSeconds=self.epoch_seconds)
        return meta


def snapshot(model: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(model weights, optimizer variables) as numpy arrays."""
    weights = [np.array(v.numpy()) for v in model.weights]
    optimizer = [np.array(v.numpy()) for v in model.optimizer.variables] if model.optimizer else []
    return weights, optimizer


def seed_variables(model: Any) -> list[Any]:
    """The model's random-seed states (dropout's SeedGenerators), in a fixed order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def seed_states(model: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in seed_variables(model)]


def metric_states(model: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.metrics_variables]


def assign_all(variables: list[Any], arrays: list[np.ndarray], what: str) -> bool:
    """Assign `arrays` to `variables` when they fit one to one; False (and a warning) when not."""
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays, strict=True)):
        log.warning("the checkpoint's %s do not fit this model (%d vs %d); left as they are",
                    what, len(arrays), len(variables))
        return False
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(array.astype(variable.dtype) if hasattr(variable, "dtype") else array)
    return True


def sync_from_device(model: Any) -> None:
    """Make the model's variables current mid-epoch (the JAX trainer keeps them in its own state)."""
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def restore(model: Any, state: TrainState) -> bool:
    """Put `state`'s weights (and optimizer state, when it fits) into `model`; True if the optimizer was restored."""
    if state.weights is None:
        return False
    variables = model.weights
    if len(variables) != len(state.weights) or any(
        tuple(v.shape) != a.shape for v, a in zip(variables, state.weights, strict=True)
    ):
        raise BadInput("the checkpoint's weights do not fit this model (was the model changed?); "
                       "delete the checkpoints folder or set output.overwrite: true", field="spec.model")
    for variable, array in zip(variables, state.weights, strict=True):
        variable.assign(array)
    if not state.optimizer:
        return False
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    slots = optimizer.variables
    fits = len(slots) == len(state.optimizer) and all(
        tuple(v.shape) == a.shape for v, a in zip(slots, state.optimizer, strict=True)
    )
    if not fits:
        # e.g. a GPU run with loss scaling resumed on a CPU pod without it: keep the weights.
        log.warning("optimizer state in the checkpoint does not fit (%d vs %d variables); starting it afresh",
                    len(state.optimizer), len(slots))
        return False
    for variable, array in zip(slots, state.optimizer, strict=True):
        variable.assign(array.astype(variable.dtype) if hasattr(variable, "dtype") else array)
    return True


class CheckpointStore:
    """Reads and writes the checkpoints folder of one artifact folder."""

    def __init__(self, output: Path, spec_fingerprint: str, place: Place | None = None) -> None:
        self.folder = Path(output) / CHECKPOINT_DIR
        self.fingerprint = spec_fingerprint
        self.place = place or Place(Path(output))

    @property
    def latest_path(self) -> Path:
        return self.folder / LATEST

    def exists(self) -> bool:
        return self.latest_path.is_file()

    def clear(self) -> None:
        self.place.delete(f"{CHECKPOINT_DIR}/{LATEST}")
        self.place.delete_tree(CHECKPOINT_DIR)
        shutil.rmtree(self.folder, ignore_errors=True)

    def read_meta(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        try:
            return json.loads(self.latest_path.read_text())  # type: ignore[no-any-return]
        except ValueError as err:
            raise BadInput(f"corrupt checkpoint index: {err}; delete the checkpoints folder",
                           path=str(self.latest_path)) from err

    def load(self) -> tuple[TrainState, dict[str, Any]] | None:
        """(state, metadata) of the last checkpoint (an epoch's or a step's), or None when there is none."""
        meta = self.read_meta()
        if meta is None:
            return None
        if meta.get("fingerprint") != self.fingerprint:
            raise BadInput(
                "the checkpoints here come from a TrainJob with a different spec or data; "
                "use a new output.path, delete the checkpoints folder, or set output.overwrite: true",
                path=str(self.folder),
            )
        epoch_dir = self.folder / meta["dir"]
        try:
            with np.load(epoch_dir / WEIGHTS) as archive:
                weights = [archive[f"a{i:05d}"] for i in range(len(archive.files))]
            with np.load(epoch_dir / OPTIMIZER) as archive:
                optimizer = [archive[f"a{i:05d}"] for i in range(len(archive.files))]
            step = int(meta.get("step", 0))
            seeds = _load_arrays(epoch_dir / SEEDS) if step else None
            metrics = _load_arrays(epoch_dir / METRICS) if step else None
        except (OSError, KeyError, ValueError) as err:
            raise BadInput(f"checkpoint of epoch {meta['epoch']} is unreadable: {err}; delete the checkpoints folder",
                           path=str(epoch_dir)) from err
        state = TrainState(
            epoch=int(meta["epoch"]), history=meta.get("history", {}), best=meta.get("best"),
            wait=int(meta.get("wait", 0)), stopped_early=bool(meta.get("stoppedEarly", False)),
            weights=weights, optimizer=optimizer,
            step=step, step_batch_size=int(meta.get("stepBatchSize", 0)) if step else 0,
            seeds=seeds, metrics=metrics, epoch_seconds=float(meta.get("epochSeconds", 0.0)) if step else 0.0,
        )
        return state, meta

    def save(self, state: TrainState, extra: dict[str, Any]) -> dict[str, Any]:
        """Write `state` (with its arrays) as the newest checkpoint, atomically.

        Returns what `status.checkpoint` shows: {epoch, step, time, place}.
        """
        assert state.weights is not None
        name = f"epoch-{state.epoch:04d}" + (f"-step-{state.step:06d}" if state.step else "")
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        _save_arrays(partial / WEIGHTS, state.weights)
        _save_arrays(partial / OPTIMIZER, state.optimizer or [])
        if state.step:
            _save_arrays(partial / SEEDS, state.seeds or [])
            _save_arrays(partial / METRICS, state.metrics or [])
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        saved_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta = {**extra, **state.to_json(), "dir": name, "fingerprint": self.fingerprint, "time": saved_at}
        write_text_atomic(self.latest_path, json.dumps(meta, indent=1))
        for old in self.folder.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        # object store: the same commit protocol with objects: the epoch's arrays, then latest.json, then
        # the older epochs go. A kill at any point leaves latest.json naming complete objects.
        self.place.push_tree(f"{CHECKPOINT_DIR}/{name}")
        self.place.push(f"{CHECKPOINT_DIR}/{LATEST}")
        self.place.delete_tree(CHECKPOINT_DIR, keep=name, also_keep=LATEST)
        return {"epoch": state.epoch, "step": state.step, "time": saved_at,
                "place": self.place.show(self.folder / name)}


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[f"a{i:05d}"] for i in range(len(archive.files))]


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    named: dict[str, Any] = {f"a{i:05d}": a for i, a in enumerate(arrays)}
    np.savez(path, **named)

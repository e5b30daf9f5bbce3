"""Per-epoch checkpoints, written atomically, so a restarted pod resumes where it stopped.

    checkpoints/latest.json     the commit point: epoch, history, early-stopping state
    checkpoints/epoch-0003/     model.weights.npz + optimizer.npz of that epoch

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


def fingerprint(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrainState:
    """Where training stands after `epoch` completed epochs."""

    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float | None = None
    wait: int = 0
    stopped_early: bool = False
    weights: list[np.ndarray] | None = None
    optimizer: list[np.ndarray] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history, "best": self.best, "wait": self.wait,
                "stoppedEarly": self.stopped_early}


def snapshot(model: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(model weights, optimizer variables) as numpy arrays."""
    weights = [np.array(v.numpy()) for v in model.weights]
    optimizer = [np.array(v.numpy()) for v in model.optimizer.variables] if model.optimizer else []
    return weights, optimizer


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
        """(state, metadata) of the last complete epoch, or None when there is none."""
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
        except (OSError, KeyError, ValueError) as err:
            raise BadInput(f"checkpoint of epoch {meta['epoch']} is unreadable: {err}; delete the checkpoints folder",
                           path=str(epoch_dir)) from err
        state = TrainState(
            epoch=int(meta["epoch"]), history=meta.get("history", {}), best=meta.get("best"),
            wait=int(meta.get("wait", 0)), stopped_early=bool(meta.get("stoppedEarly", False)),
            weights=weights, optimizer=optimizer,
        )
        return state, meta

    def save(self, state: TrainState, extra: dict[str, Any]) -> None:
        """Write `state` (with its arrays) as the newest checkpoint, atomically."""
        assert state.weights is not None
        name = f"epoch-{state.epoch:04d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        _save_arrays(partial / WEIGHTS, state.weights)
        _save_arrays(partial / OPTIMIZER, state.optimizer or [])
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        meta = {**extra, **state.to_json(), "dir": name, "fingerprint": self.fingerprint}
        write_text_atomic(self.latest_path, json.dumps(meta, indent=1))
        for old in self.folder.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        # s3://: the same commit protocol with objects: the epoch's arrays, then latest.json, then
        # the older epochs go. A kill at any point leaves latest.json naming complete objects.
        self.place.push_tree(f"{CHECKPOINT_DIR}/{name}")
        self.place.push(f"{CHECKPOINT_DIR}/{LATEST}")
        self.place.delete_tree(CHECKPOINT_DIR, keep=name, also_keep=LATEST)


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    named: dict[str, Any] = {f"a{i:05d}": a for i, a in enumerate(arrays)}
    np.savez(path, **named)

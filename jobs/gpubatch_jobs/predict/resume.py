"""A PredictJob's finished chunks, kept until the result is published, so a stopped pod's work stays.

    .<output name>.chunks/meta.json         what the chunks belong to (a fingerprint) and how many there are
    .<output name>.chunks/chunk-000003.npy  the probabilities of chunk 3's rows (grouped order)

The local engine works in chunks of whole documents (predict/local.py). Each
finished chunk is written here (a temporary name, then renamed; an object-store
output also uploads it), so a pod preempted, evicted or deleted mid-run keeps
every chunk it finished: on SIGTERM (gpubatch_jobs.preempt) it stops after the
batch in flight and exits 143, and the next run with the same spec, input and
model reads the saved chunks and predicts only the rest. The result file
itself still appears under its name only when complete; the folder goes once
it is published. Chunks of another spec, input or model (another fingerprint)
are discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.storage import PARTIAL_MARK, Place

log = logging.getLogger("gpubatch.predict")

META = "meta.json"


def chunk_folder_name(output_name: str) -> str:
    return f".{output_name}.chunks"


class ChunkStore:
    def __init__(self, place: Place, output_name: str, fingerprint: str, chunks: int) -> None:
        self.place = place
        self.sub = chunk_folder_name(output_name)
        self.folder = place.path(self.sub)
        self.fingerprint = fingerprint
        self.chunks = chunks
        self.rows_saved = 0
        self.last_saved: str | None = None

    def _name(self, index: int) -> str:
        return f"chunk-{index:06d}.npy"

    def load(self) -> dict[int, np.ndarray]:
        """The chunks saved by earlier runs of this same work (none if they belong to other work)."""
        self.place.pull_all(self.sub)
        meta_path = self.folder / META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = None
        if meta is None or meta.get("fingerprint") != self.fingerprint or meta.get("chunks") != self.chunks:
            if meta is not None:
                log.warning("discarding the saved chunks in %s: they belong to another spec, input or model",
                            self.place.show(self.folder))
            self.clear()
            self._start()
            return {}
        saved: dict[int, np.ndarray] = {}
        for index in range(self.chunks):
            path = self.folder / self._name(index)
            if not path.is_file():
                continue
            try:
                saved[index] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                log.warning("ignoring the unreadable saved chunk %s: %s", path, err)
        return saved

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(META, json.dumps({"fingerprint": self.fingerprint, "chunks": self.chunks}).encode())

    def _write(self, name: str, data: bytes) -> None:
        final = self.folder / name
        tmp = self.folder / f".{name}{PARTIAL_MARK}-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, final)
        self.place.push(f"{self.sub}/{name}")

    def save(self, index: int, probabilities: np.ndarray) -> None:
        """Keep chunk `index`'s probabilities (atomically; uploaded for an object-store output)."""
        final = self.folder / self._name(index)
        tmp = self.folder / f".{self._name(index)}{PARTIAL_MARK}-{os.getpid()}"
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(probabilities), allow_pickle=False)
        os.replace(tmp, final)
        self.place.push(f"{self.sub}/{self._name(index)}")
        self.rows_saved += len(probabilities)
        self.last_saved = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def checkpoint(self, rows_done: int) -> dict[str, Any]:
        """What status.checkpoint shows: rows whose predictions are kept, when, where."""
        return {"done": int(rows_done), "time": self.last_saved or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "place": self.place.show(self.folder)}

    def clear(self) -> None:
        self.place.delete_tree(self.sub)
        shutil.rmtree(self.folder, ignore_errors=True)


def discard_chunks(place: Place, output_name: str) -> None:
    sub = chunk_folder_name(output_name)
    place.delete_tree(sub)
    shutil.rmtree(place.path(sub), ignore_errors=True)


def work_fingerprint(spec: Any, input_path: Path, model_dir: Path, n_rows: int,
                     ranges: list[tuple[int, int]]) -> str:
    """What the chunks' probabilities depend on: the spec's inputs, the input file, the model's files, the chunks."""
    wire = spec.wire()
    wire.pop("output", None)
    wire.pop("device", None)
    wire.pop("batchSize", None)  # the batch size changes how fast, not what is predicted
    files = sorted((str(p.relative_to(model_dir)), p.stat().st_size) for p in Path(model_dir).rglob("*") if p.is_file())
    payload = {"spec": wire, "inputBytes": Path(input_path).stat().st_size, "model": files, "rows": n_rows,
               "ranges": hashlib.sha256(np.asarray(ranges, dtype=np.int64).tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

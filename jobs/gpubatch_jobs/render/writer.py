"""The HDF5 output: N images written in order, resumable, published only when complete.

Layout of a finished file:
    images  (N, H, W) uint8, chunked by whole images (about 1 MiB a chunk), uncompressed
    index   (N,) int64  where each image came from (input row, or window start in the series)
    labels  (N,)        the input's labels, when it has them
    attrs   the render parameters, the input, `count`, `fingerprint`, `complete`

While it is written the file lives at `.<name>.partial` next to the final name.
After each batch the file is flushed and `attrs["done"]` records how many
images (a prefix, in order) are on disk; a run killed at any point and started
again with the same spec and input reopens the partial file and continues at
`done`, so it ends with exactly N images, none twice, none missing. A partial
file from a different spec or input (other fingerprint), or one too damaged to
open, is discarded and rendering starts over. `finish` marks the file complete
and `os.replace`s it to the final name, so that name only ever holds a whole file.

Full chunks are written with `write_direct_chunk`, which skips HDF5's hyperslab
machinery (about twice as fast as slicing); partial chunks go through slicing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.render.geometry import RenderParams

log = logging.getLogger("gpubatch")

CHUNK_BYTES = 1 << 20


def chunk_images(params: RenderParams) -> int:
    """Images per chunk: whole images, about 1 MiB a chunk."""
    return max(1, CHUNK_BYTES // params.image_bytes)


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint of a complete output file, or None when absent, incomplete or unreadable."""
    import h5py

    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get("complete", False)):
                return None
            return str(f.attrs.get("fingerprint", ""))
    except OSError:
        return None


class ImageWriter:
    """One resumable output file (a whole output, or one shard's part)."""

    def __init__(self, final: Path, count: int, params: RenderParams, fingerprint: str,
                 labels_dtype: np.dtype | None, attrs: dict[str, Any]) -> None:
        import h5py

        self.final = final
        self.partial = partial_path(final)
        self.count = count
        self.params = params
        self.chunk = min(chunk_images(params), max(count, 1))
        self.resumed_from = 0
        self.file = self._open_existing(fingerprint, count)
        if self.file is None:
            self.file = h5py.File(self.partial, "w")
            self._create(count, params, fingerprint, labels_dtype, attrs)
        self.images = self.file["images"]
        self.labels = self.file["labels"] if "labels" in self.file else None
        self.index = self.file["index"]

    @property
    def done(self) -> int:
        return int(self.file.attrs["done"])

    def _open_existing(self, fingerprint: str, count: int) -> Any:
        import h5py

        if not self.partial.exists():
            return None
        try:
            f = h5py.File(self.partial, "r+")
        except OSError as err:
            log.warning("discarding unreadable partial output %s: %s", self.partial, err)
            self.partial.unlink()
            return None
        if f.attrs.get("fingerprint") != fingerprint or int(f.attrs.get("count", -1)) != count:
            log.warning("discarding partial output %s: it was written for another spec or input", self.partial)
            f.close()
            self.partial.unlink()
            return None
        self.resumed_from = int(f.attrs["done"])
        log.info("resuming %s at image %d of %d", self.partial, self.resumed_from, count)
        return f

    def _create(self, count: int, params: RenderParams, fingerprint: str,
                labels_dtype: np.dtype | None, attrs: dict[str, Any]) -> None:
        f = self.file
        shape = (count, params.height, params.width)
        f.create_dataset("images", shape=shape, dtype=np.uint8,
                         chunks=(self.chunk, params.height, params.width) if count else None, fillvalue=0)
        f.create_dataset("index", shape=(count,), dtype=np.int64)
        if labels_dtype is not None:
            f.create_dataset("labels", shape=(count,), dtype=labels_dtype)
        for key, value in {**params.attrs(), **attrs}.items():
            f.attrs[key] = value
        f.attrs["count"] = count
        f.attrs["fingerprint"] = fingerprint
        f.attrs["complete"] = False
        f.attrs["done"] = 0
        f.flush()

    def write(self, start: int, images: np.ndarray, index: np.ndarray, labels: np.ndarray | None) -> None:
        """Write images [start, start + len(images)); only `commit` makes them count."""
        stop = start + len(images)
        self._write_images(start, images)
        self.index[start:stop] = index
        if self.labels is not None and labels is not None:
            self.labels[start:stop] = labels

    def _write_images(self, start: int, images: np.ndarray) -> None:
        stop = start + len(images)
        k = self.chunk
        first_full = -(-start // k) * k
        last_full = (stop // k) * k
        if first_full >= last_full:
            self.images[start:stop] = images
            return
        if start < first_full:
            self.images[start:first_full] = images[: first_full - start]
        block = np.ascontiguousarray(images[first_full - start: last_full - start])
        for offset in range(0, len(block), k):
            self.images.id.write_direct_chunk((first_full + offset, 0, 0), block[offset: offset + k])
        if last_full < stop:
            self.images[last_full:stop] = images[last_full - start:]

    def commit(self, done: int) -> None:
        """Record that images [0, done) are on disk (flushed first, so a crash never overstates it)."""
        self.file.flush()
        self.file.attrs["done"] = done
        self.file.flush()

    def finish(self) -> Path:
        """Mark complete and publish under the final name."""
        if self.done != self.count:
            raise RuntimeError(f"{self.partial}: {self.done} of {self.count} images written; cannot publish")
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.partial, self.final)
        return self.final

    def close(self) -> None:
        """Leave the partial file for a later run to resume."""
        if self.file.id.valid:
            self.file.close()

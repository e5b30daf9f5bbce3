"""The fast CPU renderer: numba-compiled, one pass per pixel column, no matplotlib.

The algorithm is the CUDA kernel's (`kernel_source.py`) written for numba: for
each column, the segments whose stroke can reach it and the rows they span are
found first, and only those rows are evaluated; the rest of the image is one
memset. `render_batch` draws a batch on all cores (prange over images, the GIL
released); `render_batch_serial` draws on the calling thread only, which is
what the one-core benchmark figure measures.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from gpubatch_jobs.render.geometry import RenderParams


@njit(nogil=True, cache=True, fastmath=False)
def _draw_image(seq, img, line_width):  # pragma: no cover - compiled
    length = seq.shape[0]
    height, width = img.shape
    lo = np.float64(seq[0])
    hi = lo
    for i in range(1, length):
        v = np.float64(seq[i])
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    span = hi - lo
    constant = not (span > 0.0)
    inv = 0.0 if constant else 1.0 / span
    hw = np.float32(0.5) * np.float32(line_width)
    pad = hw + np.float32(1.0)
    reach = hw + np.float32(0.5)
    sx = (np.float32(width) - np.float32(2.0) * pad) / np.float32(length - 1)
    sy = np.float32(height) - np.float32(2.0) * pad
    ys = np.empty(length, dtype=np.float32)
    for i in range(length):
        t = np.float32(0.5) if constant else np.float32((np.float64(seq[i]) - lo) * inv)
        ys[i] = pad + (np.float32(1.0) - t) * sy
    img[:, :] = 0
    half = np.float32(0.5)
    reach2 = reach * reach
    for c in range(width):
        px = np.float32(c) + half
        i_lo = int(math.ceil((px - pad - reach) / sx)) - 1
        i_hi = int(math.floor((px - pad + reach) / sx))
        if i_lo < 0:
            i_lo = 0
        if i_hi > length - 2:
            i_hi = length - 2
        for i in range(i_lo, i_hi + 1):
            ax = pad + np.float32(i) * sx
            bx = pad + np.float32(i + 1) * sx
            ay = ys[i]
            by = ys[i + 1]
            dx = bx - ax
            dy = by - ay
            inv_len2 = np.float32(1.0) / (dx * dx + dy * dy)
            top = ay if ay < by else by
            bottom = by if ay < by else ay
            r0 = int(math.ceil(top - reach - half))
            r1 = int(math.floor(bottom + reach - half))
            if r0 < 0:
                r0 = 0
            if r1 > height - 1:
                r1 = height - 1
            qx = (px - ax) * dx
            for r in range(r0, r1 + 1):
                py = np.float32(r) + half
                t = (qx + (py - ay) * dy) * inv_len2
                if t < 0:
                    t = np.float32(0.0)
                elif t > 1:
                    t = np.float32(1.0)
                ex = px - ax - t * dx
                ey = py - ay - t * dy
                d2 = ex * ex + ey * ey
                if d2 >= reach2:
                    continue
                cover = reach - np.float32(math.sqrt(d2))
                if cover > 1:
                    cover = np.float32(1.0)
                value = np.uint8(cover * np.float32(255.0) + half)
                if value > img[r, c]:
                    img[r, c] = value


@njit(nogil=True, cache=True)
def _draw_batch_serial(seqs, out, line_width):  # pragma: no cover - compiled
    for n in range(seqs.shape[0]):
        _draw_image(seqs[n], out[n], line_width)


@njit(nogil=True, cache=True, parallel=True)
def _draw_batch_parallel(seqs, out, line_width):  # pragma: no cover - compiled
    for n in prange(seqs.shape[0]):
        _draw_image(seqs[n], out[n], line_width)


def _check(seqs: np.ndarray, out: np.ndarray | None, params: RenderParams) -> tuple[np.ndarray, np.ndarray]:
    seqs = np.ascontiguousarray(seqs, dtype=np.float32)
    if seqs.ndim != 2 or seqs.shape[1] != params.seq_len:
        raise ValueError(f"expected sequences of shape (N, {params.seq_len}), got {seqs.shape}")
    shape = (seqs.shape[0], params.height, params.width)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"output buffer must be uint8 {shape}, got {out.dtype} {out.shape}")
    return seqs, out


def render_batch(seqs: np.ndarray, params: RenderParams, out: np.ndarray | None = None) -> np.ndarray:
    """Images (N, H, W) uint8 for sequences (N, L), drawn on all cores numba may use."""
    seqs, out = _check(seqs, out, params)
    if len(seqs):
        _draw_batch_parallel(seqs, out, np.float32(params.line_width))
    return out


def render_batch_serial(seqs: np.ndarray, params: RenderParams, out: np.ndarray | None = None) -> np.ndarray:
    """The same images drawn on the calling thread only (one core)."""
    seqs, out = _check(seqs, out, params)
    if len(seqs):
        _draw_batch_serial(seqs, out, np.float32(params.line_width))
    return out


class CpuRenderer:
    """The engine's CPU path: renders on a worker thread (numba releases the GIL), all cores.

    `submit` queues a batch and returns at once, so the engine writes the
    previous batch to HDF5 while this one is drawn. Output buffers come from a
    small ring, reused once the engine has written them.
    """

    device = "cpu"
    name = "cpu"
    depth = 2

    def __init__(self, params: RenderParams) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.params = params
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpubatch-render")
        self.ring: list[np.ndarray | None] = [None] * (self.depth + 1)
        self.turn = 0

    def submit(self, seqs: np.ndarray):  # type: ignore[no-untyped-def]
        n = len(seqs)
        buffer = self.ring[self.turn]
        if buffer is None or len(buffer) < n:
            buffer = np.empty((n, self.params.height, self.params.width), dtype=np.uint8)
            self.ring[self.turn] = buffer
        self.turn = (self.turn + 1) % len(self.ring)
        return self.pool.submit(render_batch, seqs, self.params, buffer[:n])

    def collect(self, handle) -> np.ndarray:  # type: ignore[no-untyped-def]
        return handle.result()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.shutdown(wait=True)

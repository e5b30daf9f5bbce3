"""The CuPy renderer: one raw-kernel launch per batch, pinned buffers, overlapping streams.

Each batch goes through one of three slots, each with its own CUDA stream,
device buffers and page-locked host buffers: the sequences are copied into the
slot's pinned input, then (asynchronously, on the slot's stream) uploaded,
drawn by `render_lines` (kernel_source.py) and downloaded into the slot's
pinned output. While the GPU works on one slot the engine writes the previous
slot's images to HDF5, so upload, kernel, download and the disk write overlap.
Buffers grow to the largest batch seen; an allocation that does not fit raises
CuPy's OutOfMemoryError, which the engine's OomBackoff turns into a smaller batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpubatch_jobs.render.geometry import RenderParams
from gpubatch_jobs.render.kernel_source import KERNEL_NAME, KERNEL_SOURCE, THREADS_PER_BLOCK


@dataclass
class _Slot:
    stream: Any
    capacity: int = 0
    d_in: Any = None
    d_out: Any = None
    h_in: np.ndarray | None = None
    h_out: np.ndarray | None = None
    pinned: tuple[Any, Any] | None = None
    event: Any = None


class CupyRenderer:
    """Batched GPU line rendering; `submit` is asynchronous, `collect` waits for one batch."""

    device = "gpu"
    name = "cupy"
    depth = 2  # batches in flight; one more slot holds the batch being written

    def __init__(self, params: RenderParams) -> None:
        import cupy

        self.cp = cupy
        self.params = params
        self.kernel = cupy.RawKernel(KERNEL_SOURCE, KERNEL_NAME)
        self.kernel.compile()  # compile errors surface here, before any batch
        self.slots = [_Slot(cupy.cuda.Stream(non_blocking=True)) for _ in range(self.depth + 1)]
        self.turn = 0

    def _ensure(self, slot: _Slot, n: int) -> None:
        if slot.capacity >= n:
            return
        cp, p = self.cp, self.params
        slot.d_in = slot.d_out = slot.h_in = slot.h_out = slot.pinned = None
        slot.capacity = 0
        slot.d_in = cp.empty((n, p.seq_len), dtype=cp.float32)
        slot.d_out = cp.empty((n, p.height, p.width), dtype=cp.uint8)
        pin_in = cp.cuda.alloc_pinned_memory(n * p.seq_len * 4)
        pin_out = cp.cuda.alloc_pinned_memory(n * p.image_bytes)
        slot.pinned = (pin_in, pin_out)
        slot.h_in = np.frombuffer(pin_in, np.float32, n * p.seq_len).reshape(n, p.seq_len)
        slot.h_out = np.frombuffer(pin_out, np.uint8, n * p.image_bytes).reshape(n, p.height, p.width)
        slot.capacity = n

    def launch(self, d_in: Any, d_out: Any, n: int, stream: Any = None) -> None:
        """The kernel alone on device arrays (what the benchmark's kernel row times)."""
        p = self.params
        grid = (n, -(-p.width // THREADS_PER_BLOCK))
        args = (d_in, d_out, np.int32(n), np.int32(p.seq_len), np.int32(p.width), np.int32(p.height),
                np.float32(p.line_width))
        if stream is None:
            self.kernel(grid, (THREADS_PER_BLOCK,), args)
        else:
            with stream:
                self.kernel(grid, (THREADS_PER_BLOCK,), args)

    def submit(self, seqs: np.ndarray) -> tuple[_Slot, int]:
        cp = self.cp
        n = len(seqs)
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        if slot.event is not None:
            slot.event.synchronize()
        self._ensure(slot, n)
        assert slot.h_in is not None and slot.h_out is not None
        slot.h_in[:n] = seqs
        runtime = cp.cuda.runtime
        stream = slot.stream
        runtime.memcpyAsync(slot.d_in.data.ptr, slot.h_in.ctypes.data, n * self.params.seq_len * 4,
                            runtime.memcpyHostToDevice, stream.ptr)
        self.launch(slot.d_in, slot.d_out, n, stream)
        runtime.memcpyAsync(slot.h_out.ctypes.data, slot.d_out.data.ptr, n * self.params.image_bytes,
                            runtime.memcpyDeviceToHost, stream.ptr)
        slot.event = stream.record()
        return slot, n

    def collect(self, handle: tuple[_Slot, int]) -> np.ndarray:
        slot, n = handle
        slot.event.synchronize()
        assert slot.h_out is not None
        return slot.h_out[:n]

    def render(self, seqs: np.ndarray) -> np.ndarray:
        """Synchronous convenience: images for `seqs`, as a new host array."""
        return np.array(self.collect(self.submit(np.ascontiguousarray(seqs, dtype=np.float32))))

    def close(self) -> None:
        for slot in self.slots:
            if slot.event is not None:
                slot.event.synchronize()
            slot.d_in = slot.d_out = slot.h_in = slot.h_out = slot.pinned = None
            slot.capacity = 0


def auto_batch_size(params: RenderParams, free_bytes: int | None, slots: int = 3) -> int:
    """Images per GPU batch: a quarter of free memory over all slots, at most 256 MiB of images."""
    per_image = params.image_bytes + params.seq_len * 4
    by_host = (256 << 20) // per_image
    if free_bytes is None:
        return max(1, by_host)
    by_device = int(free_bytes * 0.25) // (slots * per_image)
    return max(1, min(by_host, by_device))

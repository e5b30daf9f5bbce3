"""Out-of-memory handling shared by every engine: recognise it, halve, retry.

Each framework raises its own exception for an exhausted GPU (TensorFlow's
ResourceExhaustedError, torch.OutOfMemoryError, JAX's XlaRuntimeError with
RESOURCE_EXHAUSTED, CuPy's OutOfMemoryError). They are recognised by class
name and message, walking the exception chain, so no framework is imported.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("gpubatch")
T = TypeVar("T")

_OOM_CLASSES = {
    "ResourceExhaustedError",  # tensorflow
    "OutOfMemoryError",  # torch.cuda / torch, cupy.cuda.memory
    "MemoryError",  # host allocations
}
_OOM_MESSAGES = (
    "out of memory",
    "resource_exhausted",
    "resource exhausted",
    "cudaerrormemoryallocation",
    "cuda_error_out_of_memory",
    "oom when allocating",
    "failed to allocate",
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


# A GPU that failed (not one that is merely full): CUDA runtime and driver errors, cuDNN and
# cuBLAS failures, XLA and TensorFlow reporting a failed launch. Retrying on the same GPU
# rarely helps; the CPU re-run does.
_GPU_FAILURE_MESSAGES = (
    "cuda error",
    "cuda_error_",
    "cudaerror",
    "cuda runtime error",
    "cudnn",
    "cublas_status_",
    "cufft_",
    "cusolver_status_",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "failed to launch cuda kernel",
    "gpu sync failed",
    "nccl error",
    "xid",
)
_GPU_FAILURE_CLASSES = {
    "CUDARuntimeError",  # cupy.cuda.runtime
    "CUDADriverError",  # cupy.cuda.driver
    "CUDNNError",  # cupy.cuda.cudnn
    "CUBLASError",
    "AcceleratorError",  # torch >= 2.8
}


def is_gpu_failure(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is a GPU failing, other than running out of memory."""
    if is_oom_error(exc):
        return False
    for err in _chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & _GPU_FAILURE_CLASSES:
            return True
        text = str(err).lower()
        if any(marker in text for marker in _GPU_FAILURE_MESSAGES if marker != "xid") or " xid " in f" {text} ":
            return True
    return False


def is_oom_error(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is an out-of-memory error of any framework."""
    for err in _chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & _OOM_CLASSES:
            return True
        text = str(err).lower()
        if any(marker in text for marker in _OOM_MESSAGES):
            return True
    return False


def release_gpu_memory() -> None:
    """Give cached GPU memory back after an OOM, for every framework already loaded."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()


class OomBackoff:
    """Run `fn(size)`; on out-of-memory halve `size` and try again, down to `minimum`.

    The size that worked is kept, so an engine calling `run` per batch settles
    on a size that fits and stays there. `backoffs` counts the halvings.
    """

    def __init__(self, start: int, minimum: int = 1, on_backoff: Callable[[int, int], None] | None = None) -> None:
        if start < 1 or minimum < 1:
            raise ValueError("batch sizes must be >= 1")
        self.size = start
        self.minimum = min(minimum, start)
        self.backoffs = 0
        self.on_backoff = on_backoff

    def run(self, fn: Callable[[int], T]) -> T:
        while True:
            try:
                return fn(self.size)
            except Exception as err:
                if not is_oom_error(err) or self.size <= self.minimum:
                    raise
                smaller = max(self.minimum, self.size // 2)
                log.warning("out of memory at batch size %d; retrying with %d", self.size, smaller)
                release_gpu_memory()
                if self.on_backoff is not None:
                    self.on_backoff(self.size, smaller)
                self.size = smaller
                self.backoffs += 1

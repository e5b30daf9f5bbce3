"""The device layer: find the GPU, trust it only after a smoke test, set it up, fall back.

    choice = select_device(ctx.device_instruction(), framework="cupy")
    setup_framework("cupy", choice)
    backoff = OomBackoff(start=4096)
    result = backoff.run(lambda size: render(batch_of(size)))

Framework probes live one per framework in `frameworks.py`, the driver probe in
`cuda.py` (NVML, no CUDA context), the auto chain in `select.py`, OOM handling
in `oom.py` and the readiness report in `doctor.py`. Nothing here imports a
framework until a probe or setup needs it.
"""

from gpubatch_jobs.devices.base import CudaProbe, DeviceChoice, GpuInfo
from gpubatch_jobs.devices.cuda import gpu_memory, probe
from gpubatch_jobs.devices.frameworks import CPU, GPU_PROBES, FrameworkProbe
from gpubatch_jobs.devices.oom import OomBackoff, is_oom_error, release_gpu_memory
from gpubatch_jobs.devices.select import (
    requested_instruction,
    reset_cache,
    select_device,
    setup_framework,
)

__all__ = [
    "CPU",
    "GPU_PROBES",
    "FrameworkProbe",
    "CudaProbe",
    "DeviceChoice",
    "GpuInfo",
    "OomBackoff",
    "gpu_memory",
    "is_oom_error",
    "probe",
    "release_gpu_memory",
    "requested_instruction",
    "reset_cache",
    "select_device",
    "setup_framework",
]

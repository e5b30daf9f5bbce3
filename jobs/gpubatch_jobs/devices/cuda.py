"""The CUDA probe: GPUs, memory and driver via NVML, without a CUDA context.

NVML (libnvidia-ml, shipped with the driver) answers "which GPUs, how much
memory is free" without initialising CUDA, so probing is cheap and leaves the
GPU untouched for the framework that will use it. `nvidia-smi` is the second
source. `CUDA_VISIBLE_DEVICES` is honoured the way CUDA honours it.

Tests fake the hardware by replacing `_raw_probe` (tests/fakegpu/sitecustomize.py);
nothing here reads a test switch.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess

from gpubatch_jobs.devices.base import CudaProbe, GpuInfo


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _visible(gpus: list[GpuInfo]) -> list[GpuInfo]:
    """Apply CUDA_VISIBLE_DEVICES (indices or UUID prefixes; empty hides all)."""
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    if setting is None:
        return gpus
    chosen = []
    for item in (s.strip() for s in setting.split(",")):
        if not item or item == "-1":
            break  # CUDA stops at the first invalid entry
        match = [g for g in gpus if (item.isdigit() and g.index == int(item)) or (g.uuid and g.uuid.startswith(item))]
        if not match:
            break
        chosen.append(match[0])
    return chosen


def _nvml_probe() -> CudaProbe:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as err:
        return CudaProbe(error=f"NVIDIA driver library not found (libnvidia-ml.so.1): {err}")
    if nvml.nvmlInit_v2() != 0:
        return CudaProbe(error="nvmlInit failed: the NVIDIA driver is installed but not working")
    try:
        buf = ctypes.create_string_buffer(96)
        driver = buf.value.decode() if nvml.nvmlSystemGetDriverVersion(buf, 96) == 0 else None
        cuda_version = ctypes.c_int()
        cuda = None
        if nvml.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(cuda_version)) == 0:
            cuda = f"{cuda_version.value // 1000}.{(cuda_version.value % 1000) // 10}"
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return CudaProbe(driver_version=driver, cuda_driver_version=cuda, source="nvml", error="nvmlDeviceGetCount failed")
        gpus = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetName(handle, name, 96)
            uuid = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetUUID(handle, uuid, 96)
            memory = _NvmlMemory()
            nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory))
            major, minor = ctypes.c_int(), ctypes.c_int()
            cc = ""
            if nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) == 0:
                cc = f"{major.value}.{minor.value}"
            gpus.append(GpuInfo(index, name.value.decode(), memory.total, memory.free, uuid.value.decode(), cc))
        return CudaProbe(gpus=gpus, driver_version=driver, cuda_driver_version=cuda, source="nvml")
    finally:
        nvml.nvmlShutdown()


def _smi_probe() -> CudaProbe:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return CudaProbe(error="nvidia-smi not found")
    query = "index,name,memory.total,memory.free,uuid,driver_version,compute_cap"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as err:
        return CudaProbe(error=f"nvidia-smi failed: {err}")
    gpus, driver = [], None
    for line in out.strip().splitlines():
        index, name, total, free, uuid, driver, cc = (p.strip() for p in line.split(","))
        gpus.append(GpuInfo(int(index), name, int(float(total)) * 1024**2, int(float(free)) * 1024**2, uuid, cc))
    return CudaProbe(gpus=gpus, driver_version=driver, source="nvidia-smi")


@functools.cache
def _raw_probe() -> CudaProbe:
    found = _nvml_probe()
    if found.source == "none":
        by_smi = _smi_probe()
        if by_smi.gpus:
            return by_smi
    return found


def probe() -> CudaProbe:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES applied). Cached."""
    raw = _raw_probe()
    visible = _visible(raw.gpus)
    error = raw.error
    if raw.gpus and not visible:
        error = f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} hides all {len(raw.gpus)} GPU(s)"
    return CudaProbe(visible, raw.driver_version, raw.cuda_driver_version, raw.source, error)


def gpu_memory() -> list[tuple[int, int]]:
    """(free, total) bytes for each visible GPU, read fresh (not cached)."""
    reset_cache()
    return [(g.memory_free_bytes, g.memory_total_bytes) for g in probe().gpus]


def reset_cache() -> None:
    _raw_probe.cache_clear()

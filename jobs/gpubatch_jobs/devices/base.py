"""Shared types of the device layer: what a probe found and what was chosen."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    uuid: str = ""
    compute_capability: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CudaProbe:
    """What the driver reports, read without creating a CUDA context."""

    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the newest CUDA the driver supports
    source: str = "none"  # nvml | nvidia-smi | fake | none
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpus": [g.as_dict() for g in self.gpus],
            "driverVersion": self.driver_version,
            "cudaDriverVersion": self.cuda_driver_version,
            "source": self.source,
            "error": self.error,
        }


@dataclass(frozen=True)
class DeviceChoice:
    """The device an engine will use, and why."""

    device: str  # gpu | cpu
    framework: str  # the framework whose probe passed the smoke test, or "cpu"
    reason: str
    fell_back: bool = False
    gpus: tuple[GpuInfo, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.device == "gpu"

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "framework": self.framework,
            "reason": self.reason,
            "fellBack": self.fell_back,
            "gpus": [g.name for g in self.gpus],
        }


def is_installed(module: str) -> bool:
    """True when `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False

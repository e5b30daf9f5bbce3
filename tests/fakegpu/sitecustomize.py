"""Test only: a faked GPU in the test process and in every Python process the tests start.

Production code reads no test switch. This module patches the two places the device
layer asks the hardware (gpubatch_jobs/devices): the driver probe (`cuda._raw_probe`)
and the framework smoke test (`select.smoke_test`), so that `GPUBATCH_FAKE_GPU` decides:

    none     no GPU (no driver)
    ok:N     N healthy 80 GB GPUs whose smoke test passes
    broken   one GPU the driver lists but every framework fails to use

Unset, the real probe and smoke test run. tests/conftest.py puts this folder first on
PYTHONPATH for the session, so Python imports this file at start-up in the subprocesses
the tests run (`gpubatch run`, the pod's `gpubatch-job`) as `sitecustomize`, and calls
`install()` in the test process itself.
"""

from __future__ import annotations

import functools
import os
from typing import Any

FAKE_ENV = "GPUBATCH_FAKE_GPU"
FAKE_TOTAL = 80 * 1024**3


def fake_mode() -> str | None:
    return os.environ.get(FAKE_ENV) or None


def install() -> None:
    from gpubatch_jobs.devices import cuda
    from gpubatch_jobs.devices import select as device_select
    from gpubatch_jobs.devices.base import CudaProbe, GpuInfo

    if getattr(cuda._raw_probe, "faked", False):
        return
    real_probe, real_smoke = cuda._raw_probe, device_select.smoke_test.__wrapped__

    def fake_probe(mode: str) -> CudaProbe:
        if mode == "none":
            return CudaProbe(source="fake", error="no NVIDIA driver (faked)")
        count = int(mode.split(":", 1)[1]) if mode.startswith("ok:") else 1
        gpus = [GpuInfo(i, f"Fake GPU ({FAKE_ENV})", FAKE_TOTAL, FAKE_TOTAL, f"GPU-fake-{i}", "9.0")
                for i in range(count)]
        return CudaProbe(gpus=gpus, driver_version="fake", cuda_driver_version="12.4", source="fake")

    @functools.cache
    def raw_probe() -> Any:
        mode = fake_mode()
        return fake_probe(mode) if mode else real_probe()

    @functools.cache
    def smoke_test(name: str) -> None:
        mode = fake_mode()
        if mode == "broken":
            raise RuntimeError(f"CUDA error: unspecified launch failure (faked by {FAKE_ENV}=broken)")
        if mode and mode.startswith("ok"):
            return
        real_smoke(name)

    clear_fake = raw_probe.cache_clear

    def clear() -> None:
        clear_fake()
        real_probe.cache_clear()

    raw_probe.faked = True  # type: ignore[attr-defined]
    cuda._raw_probe = raw_probe  # type: ignore[assignment]
    cuda._raw_probe.cache_clear = clear  # type: ignore[method-assign]
    device_select.smoke_test = smoke_test


if fake_mode():
    install()

"""Fixtures for unit tests: a faked GPU, by patching the one probe function.

Real hardware is never needed here. `fake_gpu` makes the driver probe report
a GPU and lets each test decide whether the framework's smoke test passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gpubatch_jobs.devices import cuda, reset_cache
from gpubatch_jobs.devices import select as device_select
from gpubatch_jobs.devices.base import CudaProbe, GpuInfo
from tests.fakegpu.sitecustomize import FAKE_ENV


@pytest.fixture(autouse=True)
def _fresh_device_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GPUBATCH_DEVICE", raising=False)
    monkeypatch.delenv(FAKE_ENV, raising=False)
    reset_cache()
    yield
    reset_cache()


FakeGpu = Callable[..., list[str]]


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """fake_gpu(count=1, smoke_ok=True) -> list of framework names whose smoke test ran."""

    def install(count: int = 1, smoke_ok: bool | dict[str, bool] = True, installed: bool = True) -> list[str]:
        gpus = [GpuInfo(i, "Fake H100", 80 * 2**30, 79 * 2**30, f"GPU-{i}", "9.0") for i in range(count)]
        monkeypatch.setattr(cuda, "probe", lambda: CudaProbe(gpus=gpus, driver_version="550.54", source="fake"))
        calls: list[str] = []

        def smoke(name: str) -> None:
            calls.append(name)
            ok = smoke_ok.get(name, False) if isinstance(smoke_ok, dict) else smoke_ok
            if not ok:
                raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

        smoke.cache_clear = lambda: None  # type: ignore[attr-defined]  # as functools.cache's
        monkeypatch.setattr(device_select, "smoke_test", smoke)
        if installed:
            for backend in device_select.GPU_PROBES.values():
                monkeypatch.setattr(backend, "installed", lambda: True)
        return calls

    return install

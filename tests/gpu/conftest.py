"""Real-GPU tests: they run only where the device layer finds a usable NVIDIA GPU."""

from __future__ import annotations

import pytest

from gpubatch_jobs.devices import probe


@pytest.fixture(autouse=True)
def _require_gpu(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("gpu") is None:
        return
    found = probe()
    if not found.gpus:
        pytest.skip(f"no NVIDIA GPU here ({found.error or 'none visible'})")

"""The CuPy renderer on a real GPU: same pixels as the CPU, OOM backoff, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from gpubatch_jobs.render import engine
from gpubatch_jobs.render.cpu import render_batch
from gpubatch_jobs.render.geometry import RenderParams
from gpubatch_jobs.spec.kinds import RenderJobSpec
from tests.ink import ink_iou
from tests.unit.local import run_context

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


def walks(n: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + np.cumsum(rng.standard_normal((n, length)), axis=1)).astype(np.float32)


@pytest.mark.parametrize(("width", "height", "seq_len", "line_width"),
                         [(224, 224, 100, 1.5), (800, 500, 100, 1.5), (30, 20, 500, 4.0), (64, 64, 2, 1.0)])
def test_kernel_draws_what_the_cpu_draws(width: int, height: int, seq_len: int, line_width: float) -> None:
    from gpubatch_jobs.render.gpu import CupyRenderer

    params = RenderParams(seq_len, width, height, line_width)
    seqs = walks(300, seq_len)
    seqs[0] = 5.0
    renderer = CupyRenderer(params)
    try:
        gpu_images = renderer.render(seqs)
    finally:
        renderer.close()
    cpu_images = render_batch(seqs, params)
    assert np.abs(gpu_images.astype(int) - cpu_images).max() <= 2  # fused multiply-add on the GPU
    assert ink_iou(gpu_images, cpu_images) >= 0.99


def spec(tmp_path: Path, **fields: Any) -> RenderJobSpec:
    np.save(tmp_path / "series.npy", walks(1, 30_000)[0])
    return RenderJobSpec.model_validate({"input": {"path": "series.npy"}, "output": {"path": "out.h5"},
                                         "seqLen": 100, "device": {"policy": "gpu"}, **fields})


def test_end_to_end_on_the_gpu(tmp_path: Path) -> None:
    summary = engine.run(told := spec(tmp_path), run_context(told, base_dir=tmp_path))
    assert summary["device"] == "gpu" and summary["renderer"] == "cupy" and summary["fallbacks"] == []
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["images"].shape == (29_901, 224, 224)
        series = np.load(tmp_path / "series.npy")
        picks = [0, 1, 12_345, 29_900]
        windows = np.stack([series[s: s + 100] for s in f["index"][picks]])
        assert np.abs(f["images"][picks].astype(int) - render_batch(windows, RenderParams(100, 224, 224, 1.5))).max() <= 2


def test_out_of_memory_halves_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def tiny_pool(framework: str, choice: Any) -> None:
        cupy.get_default_memory_pool().set_limit(size=64 << 20)

    monkeypatch.setattr(engine, "setup_framework", tiny_pool)
    try:
        summary = engine.run(told := spec(tmp_path, batchSize=20_000), run_context(told, base_dir=tmp_path))
    finally:
        cupy.get_default_memory_pool().set_limit(size=0)
    assert summary["device"] == "gpu" and summary["oomBackoffs"] >= 1
    assert summary["batchSize"] < 20_000 and summary["fallbacks"] == []
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["index"][()].tolist() == list(range(29_901))

"""Normalisation, geometry and the three renderers agreeing with each other."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpubatch_jobs.render.cpu import render_batch, render_batch_serial
from gpubatch_jobs.render.geometry import RenderParams, normalise, pixel_coords
from gpubatch_jobs.render.kernel_source import HOST_SOURCE
from gpubatch_jobs.render.reference import MatplotlibRenderer, render_seed_style
from tests.ink import ink_iou


def walks(n: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + np.cumsum(rng.standard_normal((n, length)), axis=1)).astype(np.float32)


def test_normalise_scales_each_window_to_unit_range() -> None:
    t, constant = normalise(np.array([[1.0, 3.0, 2.0], [-5.0, -5.0, -5.0]]))
    assert t[0].tolist() == [0.0, 1.0, 0.5]
    assert t[1].tolist() == [0.5, 0.5, 0.5]
    assert constant.tolist() == [False, True]


def test_normalise_survives_extreme_magnitudes() -> None:
    t, _ = normalise(np.array([[-3e38, 3e38, 0.0], [1e-30, 2e-30, 1.5e-30]], dtype=np.float32))
    assert np.isfinite(t).all()
    assert t[0].tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert t[1].tolist() == pytest.approx([0.0, 1.0, 0.5], abs=1e-6)


def test_points_span_the_padded_image_with_max_at_the_top() -> None:
    params = RenderParams(seq_len=5, width=100, height=50, line_width=2.0)
    xs, ys = pixel_coords(np.array([[0.0, 4.0, 1.0, 2.0, 3.0]]), params)
    assert xs[0, 0] == pytest.approx(params.pad) and xs[0, -1] == pytest.approx(100 - params.pad)
    assert ys[0].min() == pytest.approx(params.pad) and ys[0, 1] == ys[0].min()  # max value: top row
    assert ys[0].max() == pytest.approx(50 - params.pad) and ys[0, 0] == ys[0].max()


def test_constant_sequence_is_a_flat_line_at_mid_height() -> None:
    params = RenderParams(seq_len=50, width=64, height=64, line_width=1.5)
    image = render_batch(np.full((1, 50), 7.0, dtype=np.float32), params)[0]
    rows = np.flatnonzero((image >= 128).any(axis=1))
    assert rows.tolist() in ([31], [32], [31, 32])
    inked_columns = (image >= 128).any(axis=0)
    assert inked_columns[2:-2].all()


@pytest.mark.parametrize(
    ("width", "height", "seq_len", "line_width"),
    [(224, 224, 100, 1.5), (800, 500, 100, 1.5), (64, 64, 32, 1.0), (224, 224, 100, 3.0), (128, 96, 400, 2.0)],
)
def test_cpu_renderer_matches_matplotlib_ink(width: int, height: int, seq_len: int, line_width: float) -> None:
    params = RenderParams(seq_len, width, height, line_width)
    seqs = walks(12, seq_len, seed=width + seq_len)
    fast = render_batch(seqs, params)
    reference = MatplotlibRenderer(params).render_batch(seqs)
    for i in range(len(seqs)):
        assert ink_iou(fast[i], reference[i]) >= 0.9, f"image {i}"


def test_seed_style_matplotlib_draws_the_same_as_the_reused_figure() -> None:
    params = RenderParams(60, 120, 80, 1.5)
    seq = walks(1, 60)[0]
    assert ink_iou(render_seed_style(seq, params), MatplotlibRenderer(params).render(seq)) == 1.0


def test_serial_and_parallel_cpu_renderers_are_identical() -> None:
    params = RenderParams(100, 224, 224, 1.5)
    seqs = walks(40, 100)
    assert np.array_equal(render_batch(seqs, params), render_batch_serial(seqs, params))


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the kernel source for the host")
    folder: Path = tmp_path_factory.mktemp("kernel")
    (folder / "kernel.cpp").write_text(HOST_SOURCE)
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(folder / "kernel.so"),
                    str(folder / "kernel.cpp")], check=True)
    return ctypes.CDLL(str(folder / "kernel.so"))


@pytest.mark.parametrize(
    ("width", "height", "seq_len", "line_width"),
    [(224, 224, 100, 1.5), (800, 500, 100, 1.5), (30, 20, 500, 4.0), (64, 64, 2, 1.0)],
)
def test_cuda_kernel_source_draws_exactly_what_the_cpu_renderer_draws(
    host_kernel: ctypes.CDLL, width: int, height: int, seq_len: int, line_width: float
) -> None:
    """The kernel's column function, compiled for the host, against numba: the same pixels."""
    params = RenderParams(seq_len, width, height, line_width)
    seqs = walks(20, seq_len, seed=seq_len)
    seqs[0] = 3.0  # constant
    out = np.zeros((len(seqs), height, width), dtype=np.uint8)
    host_kernel.render_lines_host(seqs.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
                                  len(seqs), seq_len, width, height, ctypes.c_float(line_width))
    assert np.array_equal(out, render_batch(seqs, params))

"""RenderJob benchmark: images/s for each way of drawing line charts, against the seed's.

    .venv/bin/python bench/render.py                 # default: about a minute on 2 cores
    .venv/bin/python bench/render.py --scale 10      # 10x the images per row
    .venv/bin/python bench/render.py --sizes 224x224 --e2e-images 1000000
    python bench/render.py --rows seed,gpu-kernel,gpu-e2e   # the GPU rows beside the seed's way only

Rows, at each size (default 224x224 and 800x500), each with its ratio to the first:
  matplotlib, seed style   a new pyplot figure per image, savefig to PNG bytes (what the seed did)
  matplotlib, reused fig   one figure, set_data + draw per image
  CPU renderer, 1 core     numba, one thread
  CPU renderer, N cores    numba, all cores (what the engine uses without a GPU)
  CPU end-to-end -> HDF5   the engine: .npy series -> images in HDF5, CPU
  GPU kernel alone         the CuPy raw kernel on device-resident data
  GPU end-to-end -> HDF5   the engine with policy gpu: pinned buffers, streams, HDF5 writes
GPU rows print "skipped: no GPU" where CuPy or a GPU is missing. The end-to-end
rows also print where the time went (gather, render wait, HDF5 write).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs.render.geometry import RenderParams

SEQ_LEN = 100


def walks(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + np.cumsum(rng.standard_normal((n, SEQ_LEN)), axis=1)).astype(np.float32)


def rate(fn: Callable[[], int], min_seconds: float = 0.0) -> float:
    """Images per second of fn (which returns how many it drew), repeated for min_seconds."""
    done, started = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def seed_style(params: RenderParams, n: int) -> float:
    from gpubatch_jobs.render.reference import render_seed_style

    seqs = walks(n)
    render_seed_style(seqs[0], params)  # warm-up: font cache, backend
    return rate(lambda: sum(1 for s in seqs if render_seed_style(s, params) is not None))


def reused_figure(params: RenderParams, n: int) -> float:
    from gpubatch_jobs.render.reference import MatplotlibRenderer

    renderer, seqs = MatplotlibRenderer(params), walks(n)
    renderer.render(seqs[0])
    return rate(lambda: len(renderer.render_batch(seqs)))


def cpu_renderer(params: RenderParams, n: int, threads: int) -> float:
    import numba

    from gpubatch_jobs.render.cpu import render_batch, render_batch_serial

    seqs = walks(n)
    out = np.empty((n, params.height, params.width), dtype=np.uint8)
    draw = render_batch_serial if threads == 1 else render_batch
    draw(seqs[:8], params)
    draw(seqs, params, out)  # touch the output pages once
    numba.set_num_threads(max(1, threads))
    try:
        return rate(lambda: len(draw(seqs, params, out)), min_seconds=1.0)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def gpu_available() -> str | None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no GPU"
    except Exception as err:
        return f"no GPU ({type(err).__name__})"
    return None


def gpu_kernel(params: RenderParams, n: int) -> float:
    import cupy

    from gpubatch_jobs.render.gpu import CupyRenderer

    renderer = CupyRenderer(params)
    d_in = cupy.asarray(walks(n))
    d_out = cupy.empty((n, params.height, params.width), dtype=cupy.uint8)
    renderer.launch(d_in, d_out, n)
    cupy.cuda.Device().synchronize()
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        renderer.launch(d_in, d_out, n)
        reps += 1
    cupy.cuda.Device().synchronize()
    return reps * n / (time.perf_counter() - started)


def end_to_end(params: RenderParams, n: int, policy: str, folder: Path) -> tuple[float, dict[str, Any]]:
    from gpubatch_jobs.render import engine
    from gpubatch_jobs.runtime import RunContext
    from gpubatch_jobs.spec.kinds import RenderJobSpec

    rng = np.random.default_rng(1)
    np.save(folder / "series.npy", (100 + np.cumsum(rng.standard_normal(n + SEQ_LEN - 1))).astype(np.float32))
    spec = RenderJobSpec.model_validate({
        "input": {"path": "series.npy"}, "output": {"path": f"out-{policy}.h5", "overwrite": True},
        "seqLen": SEQ_LEN, "width": params.width, "height": params.height, "lineWidth": params.line_width,
        "device": {"policy": policy}, "previewImages": 0,
    })
    ctx = RunContext(base_dir=folder)
    engine.run(spec.model_copy(update={"output": spec.output.model_copy(update={"path": "warm.h5"})}), ctx) \
        if policy == "gpu" else None  # compile the kernel, warm the pool
    started = time.perf_counter()
    summary = engine.run(spec, ctx)
    elapsed = time.perf_counter() - started
    (folder / f"out-{policy}.h5").unlink()
    return n / elapsed, summary


ROW_KEYS = ["seed", "reused", "cpu-1", "cpu-n", "cpu-e2e", "gpu-kernel", "gpu-e2e"]  # bench_rows' order


def bench_rows(params: RenderParams, scale: float, e2e_images: int, cores: int,
               folder: Path) -> list[tuple[str, Callable[[], Any]]]:
    small = params.width * params.height <= 224 * 224

    def count(base: int) -> int:
        return max(1, int(base * scale))

    e2e = e2e_images or count(100_000 if small else 10_000)
    return [
        ("matplotlib, seed style (new figure + savefig PNG)", lambda: seed_style(params, count(100 if small else 40))),
        ("matplotlib, reused figure", lambda: reused_figure(params, count(300 if small else 100))),
        ("CPU renderer, 1 core", lambda: cpu_renderer(params, count(20_000 if small else 2_000), 1)),
        (f"CPU renderer, {cores} cores", lambda: cpu_renderer(params, count(20_000 if small else 2_000), cores)),
        (f"CPU end-to-end -> HDF5 ({e2e // 2} images)", lambda: end_to_end(params, e2e // 2, "cpu", folder)),
        ("GPU kernel alone", lambda: gpu_kernel(params, count(50_000 if small else 10_000))),
        (f"GPU end-to-end -> HDF5 ({e2e} images)", lambda: end_to_end(params, e2e, "gpu", folder)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224x224,800x500", help="comma-separated WxH")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row's image count")
    parser.add_argument("--e2e-images", type=int, default=0, help="images for the end-to-end rows (default by size)")
    parser.add_argument("--line-width", type=float, default=1.5)
    parser.add_argument("--dir", default=None, help="scratch folder for the HDF5 files (default: a temp dir)")
    parser.add_argument("--rows", default=",".join(ROW_KEYS),
                        help=f"comma-separated rows to run, of {','.join(ROW_KEYS)} (ratios are to the first)")
    args = parser.parse_args()
    keep = [key.strip() for key in args.rows.split(",") if key.strip()]
    if not keep or set(keep) - set(ROW_KEYS):
        parser.error(f"--rows {args.rows!r}: choose from {','.join(ROW_KEYS)}")
    no_gpu = gpu_available()
    cores = os.cpu_count() or 1
    folder = Path(args.dir or tempfile.mkdtemp(prefix="gpubatch-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"RenderJob benchmark: seqLen {SEQ_LEN}, lineWidth {args.line_width}, {cores} cores, "
          f"GPU: {'yes' if no_gpu is None else no_gpu}")
    try:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            params = RenderParams(SEQ_LEN, width, height, args.line_width)
            rows = bench_rows(params, args.scale, args.e2e_images, cores, folder)
            print(f"\n{width}x{height}")
            print(f"  {'method':<52} {'images/s':>12} {'vs seed':>10}")
            baseline = None
            for key, (name, fn) in zip(ROW_KEYS, rows, strict=True):
                if key not in keep:
                    continue
                if name.startswith("GPU") and no_gpu is not None:
                    print(f"  {name:<52} {'skipped: no GPU':>12}")
                    continue
                result = fn()
                value, summary = result if isinstance(result, tuple) else (result, None)
                baseline = baseline or value
                print(f"  {name:<52} {value:>12,.0f} {value / baseline:>9,.1f}x")
                if summary is not None:
                    print(f"  {'':<52} device {summary['device']}, batch {summary['batchSize']}, "
                          f"seconds {summary['seconds']}")
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""RenderJob: numeric sequences to line-chart images in HDF5, on the GPU or the CPU.

    summary = gpubatch_jobs.render.run(spec, ctx)

The modules, one job each: `inputs` (HDF5/.npy/.npz/CSV/Parquet rows or
windows, labels, bad values), `geometry` (normalisation and pixel geometry
shared by every renderer), `cpu` (numba), `gpu` + `kernel_source` (CuPy raw
kernel), `reference` (matplotlib), `writer` (resumable HDF5), `shards`
(parts and the virtual dataset), `preview` (PNG grid), `engine` (device
choice, batching, fallback, summary). Importing this package is cheap: numba,
h5py, matplotlib and CuPy load only when `run` is called.
"""

from __future__ import annotations

from typing import Any


def run(spec: Any, ctx: Any) -> dict[str, Any]:
    """Render the RenderJob `spec` in the RunContext `ctx`; returns the summary JSON."""
    from gpubatch_jobs.render.engine import run as run_engine

    return run_engine(spec, ctx)

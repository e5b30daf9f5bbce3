"""matplotlib as the reference look, and the way the seed's users called it.

`MatplotlibRenderer` draws with one reused figure and the geometry of
`geometry.py` (white line on black, pixel coordinates, round joins and caps,
no snapping), so its ink matches the fast renderers'. `render_seed_style` is
what the seed pipeline did per image -- a new figure, `savefig` to PNG bytes,
decode -- kept for the benchmark's baseline row.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from gpubatch_jobs.render.geometry import RenderParams, pixel_coords

DPI = 100.0


def _figure(params: RenderParams) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(params.width / DPI, params.height / DPI), dpi=DPI, facecolor="black")
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0, params.width)
    ax.set_ylim(params.height, 0)
    return fig, ax


def _line_style(params: RenderParams) -> dict[str, Any]:
    return {
        "color": "white",
        "linewidth": params.line_width * 72.0 / DPI,  # points, so that the stroke is line_width pixels
        "solid_capstyle": "round",
        "solid_joinstyle": "round",
        "antialiased": True,
        "snap": False,
    }


def _to_gray(rgba: np.ndarray, params: RenderParams) -> np.ndarray:
    gray = np.asarray(rgba)[..., 0]
    if gray.shape != (params.height, params.width):
        raise RuntimeError(f"matplotlib drew {gray.shape}, expected {(params.height, params.width)}")
    return np.array(gray, dtype=np.uint8)


class MatplotlibRenderer:
    """One figure reused for every image: the fastest honest matplotlib."""

    def __init__(self, params: RenderParams) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.params = params
        self.fig, self.ax = _figure(params)
        self.canvas = FigureCanvasAgg(self.fig)
        (self.line,) = self.ax.plot([], [], **_line_style(params))

    def render(self, seq: np.ndarray) -> np.ndarray:
        xs, ys = pixel_coords(np.asarray(seq)[None, :], self.params)
        self.line.set_data(xs[0], ys[0])
        self.canvas.draw()
        return _to_gray(self.canvas.buffer_rgba(), self.params)

    def render_batch(self, seqs: np.ndarray) -> np.ndarray:
        out = np.empty((len(seqs), self.params.height, self.params.width), dtype=np.uint8)
        for i, seq in enumerate(seqs):
            out[i] = self.render(seq)
        return out


def render_seed_style(seq: np.ndarray, params: RenderParams) -> np.ndarray:
    """A new pyplot figure per image and savefig to PNG, as the seed pipeline did."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    xs, ys = pixel_coords(np.asarray(seq)[None, :], params)
    fig = plt.figure(figsize=(params.width / DPI, params.height / DPI), dpi=DPI, facecolor="black")
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        ax.set_xlim(0, params.width)
        ax.set_ylim(params.height, 0)
        ax.plot(xs[0], ys[0], **_line_style(params))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="black")
    finally:
        plt.close(fig)
    buffer.seek(0)
    rgba = mpimg.imread(buffer, format="png")
    return _to_gray((rgba * 255.0 + 0.5).astype(np.uint8), params)

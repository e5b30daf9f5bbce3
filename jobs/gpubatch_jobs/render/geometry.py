"""Where a sequence's points land in the image: the one definition all renderers share.

Every renderer (matplotlib reference, numba CPU, CuPy kernel) draws the same
polyline, so they must agree on normalisation and geometry to the sub-pixel:

- a window's values are scaled min..max to the full plot height (top = max);
  a constant window (max == min) is drawn as a flat line at mid-height, never
  divided by zero;
- point i of L sits at x = pad + i * (W - 2 pad) / (L - 1), with the padding
  pad = lineWidth / 2 + 1 keeping the stroke and its anti-aliased edge inside;
- coordinates are continuous image coordinates with y pointing down, pixel
  (row r, column c) having its centre at (c + 0.5, r + 0.5) -- the same as
  matplotlib's display coordinates for an axes spanning the whole figure;
- a pixel's ink is its stroke coverage, clamp(lineWidth/2 + 0.5 - d, 0, 1),
  where d is the distance from its centre to the polyline (round joins and
  caps), stored as uint8 0..255 (0 = background, 255 = full ink).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Images are ink intensity: 0 background, 255 fully covered by the line.
INK_THRESHOLD = 128  # a pixel counts as "ink" for IoU comparisons at >= 50% coverage


@dataclass(frozen=True)
class RenderParams:
    """What decides the pixels: same params, same image, on any renderer."""

    seq_len: int
    width: int
    height: int
    line_width: float

    @property
    def pad(self) -> float:
        return self.line_width / 2.0 + 1.0

    @property
    def image_bytes(self) -> int:
        return self.width * self.height

    def attrs(self) -> dict[str, Any]:
        """The HDF5 attributes describing how the images were drawn."""
        return {"seqLen": self.seq_len, "width": self.width, "height": self.height,
                "lineWidth": self.line_width, "pad": self.pad, "ink": "0=background,255=line"}


def normalise(seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t in [0, 1] per point (0 = window minimum) and a flag per window that is constant.

    Computed in float64 so that huge or tiny values never overflow the span.
    """
    values = np.asarray(seqs, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    lo = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - lo
    constant = span[:, 0] <= 0
    safe = np.where(span > 0, span, 1.0)
    t = np.where(span > 0, (values - lo) / safe, 0.5)
    return t, constant


def pixel_coords(seqs: np.ndarray, params: RenderParams) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys) in continuous image coordinates, shape (N, L) each, y pointing down."""
    t, _ = normalise(seqs)
    n, length = t.shape
    pad = np.float32(params.pad)
    step = np.float32((params.width - 2.0 * params.pad) / (length - 1))
    xs = pad + np.arange(length, dtype=np.float32) * step
    ys = pad + (1.0 - t).astype(np.float32) * np.float32(params.height - 2.0 * params.pad)
    return np.broadcast_to(xs, (n, length)), ys



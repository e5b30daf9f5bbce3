"""A PNG grid of the first images, for people to look at (dark line on white)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

TILE_MAX = 256  # longest side of a tile in the grid, in pixels
GAP = 2


def preview_path(final: Path) -> Path:
    return final.with_name(f"{final.stem}.preview.png")


def _shrink(images: np.ndarray) -> np.ndarray:
    """Max-pool by an integer factor so thin lines survive the downscale."""
    _, h, w = images.shape
    factor = max(1, math.ceil(max(h, w) / TILE_MAX))
    if factor == 1:
        return images
    h2, w2 = h // factor, w // factor
    trimmed = images[:, : h2 * factor, : w2 * factor]
    return trimmed.reshape(len(images), h2, factor, w2, factor).max(axis=(2, 4))


def write_preview(images: np.ndarray, path: Path) -> Path:
    """Write the grid atomically; returns its path."""
    import matplotlib.image as mpimg

    tiles = _shrink(np.asarray(images, dtype=np.uint8))
    n, h, w = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + GAP) + GAP, cols * (w + GAP) + GAP), 128, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = GAP + r * (h + GAP), GAP + c * (w + GAP)
        grid[top: top + h, left: left + w] = 255 - tile
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mpimg.imsave(tmp, grid, cmap="gray", vmin=0, vmax=255, format="png")
    os.replace(tmp, path)
    return path

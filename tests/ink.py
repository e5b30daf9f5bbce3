"""How alike two renders are, for the tests that compare renderers (CPU, GPU, matplotlib)."""

from __future__ import annotations

import numpy as np

from gpubatch_jobs.render.geometry import INK_THRESHOLD


def ink_iou(a: np.ndarray, b: np.ndarray, threshold: int = INK_THRESHOLD) -> float:
    """Intersection over union of the ink pixels of two images (or stacks of images)."""
    ink_a, ink_b = np.asarray(a) >= threshold, np.asarray(b) >= threshold
    union = np.logical_or(ink_a, ink_b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(ink_a, ink_b).sum() / union)

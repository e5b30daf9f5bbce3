"""Sliding windows over documents, and the per-row average of their predictions.

A document is a run of consecutive rows (already ordered by position). It is
cut into windows of `window` rows every `stride` rows; when the last regular
window stops short of the document's end, one more window is aligned to the
end, so every row is covered at least once. A document shorter than the
window gets one window, padded with zeros after its rows; the padded steps'
predictions are dropped. Each row's prediction is the mean over the windows
that cover it.

Everything here is vectorised numpy: the plan is a few arrays (one entry per
window), windows are gathered a batch at a time (never all at once: 100k
windows of 50x100 float32 would be 2 GB), and merging uses `np.bincount`
over the rows a batch touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """Where each window starts (a global row index) and how many of its steps are real rows."""

    starts: np.ndarray  # int64 (n_windows,), global row index of each window's first row
    valid: np.ndarray  # int64 (n_windows,), real rows in each window (< window only when padded)
    window: int
    n_rows: int

    @property
    def n_windows(self) -> int:
        return int(self.starts.shape[0])

    def row_index(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, mask) for windows lo..hi: global row of every step, and which steps are real."""
        steps = np.arange(self.window, dtype=np.int64)
        mask = steps[None, :] < self.valid[lo:hi, None]
        rows = np.where(mask, self.starts[lo:hi, None] + steps[None, :], 0)
        return rows, mask

    def coverage(self) -> np.ndarray:
        """How many windows cover each row (every row: at least one)."""
        counts = np.zeros(self.n_rows, dtype=np.int64)
        # Difference array: +1 at each window's first row, -1 after its last real row.
        np.add.at(counts, self.starts, 1)
        ends = self.starts + self.valid
        np.add.at(counts, ends[ends < self.n_rows], -1)
        return np.cumsum(counts)


def window_counts(lengths: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Windows per document: 1 when it fits in one window, else ceil((L - W) / S) + 1."""
    lengths = np.asarray(lengths, dtype=np.int64)
    over = np.maximum(lengths - window, 0)
    return np.where(lengths <= window, 1, -(-over // stride) + 1)


def plan_windows(doc_starts: np.ndarray, doc_lengths: np.ndarray, window: int, stride: int) -> WindowPlan:
    """The windows of every document, in document order then position order."""
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    if stride > window:
        raise ValueError(f"stride ({stride}) must be <= window ({window}), or rows get no prediction")
    doc_starts = np.asarray(doc_starts, dtype=np.int64)
    doc_lengths = np.asarray(doc_lengths, dtype=np.int64)
    if np.any(doc_lengths < 1):
        raise ValueError("every document needs at least one row")
    counts = window_counts(doc_lengths, window, stride)
    doc_of_window = np.repeat(np.arange(doc_lengths.shape[0]), counts)
    first_window = np.cumsum(counts) - counts
    k = np.arange(doc_of_window.shape[0], dtype=np.int64) - first_window[doc_of_window]
    last_start = np.maximum(doc_lengths - window, 0)[doc_of_window]
    local_start = np.minimum(k * stride, last_start)
    starts = doc_starts[doc_of_window] + local_start
    valid = np.minimum(doc_lengths, window)[doc_of_window]
    n_rows = int(doc_starts[-1] + doc_lengths[-1]) if doc_lengths.size else 0
    return WindowPlan(starts=starts, valid=valid, window=window, n_rows=n_rows)


class RowAverager:
    """Sums each row's predictions over the windows covering it; `mean()` divides by coverage."""

    def __init__(self, plan: WindowPlan, n_classes: int) -> None:
        self.plan = plan
        self.sums = np.zeros((plan.n_rows, n_classes), dtype=np.float64)

    def add(self, lo: int, hi: int, predictions: np.ndarray) -> None:
        """Add the predictions (at least hi - lo windows; extra padded windows are ignored)."""
        rows, mask = self.plan.row_index(lo, hi)
        flat_rows = rows[mask]
        if flat_rows.size == 0:
            return
        flat_pred = np.asarray(predictions[: hi - lo], dtype=np.float64)[mask]
        # Windows are in row order, so a batch touches one contiguous band of rows.
        first = int(flat_rows.min())
        local = flat_rows - first
        width = int(local.max()) + 1
        for c in range(self.sums.shape[1]):
            self.sums[first : first + width, c] += np.bincount(local, weights=flat_pred[:, c], minlength=width)

    def mean(self) -> np.ndarray:
        coverage = self.plan.coverage()
        if np.any(coverage == 0):
            raise ValueError("some rows are covered by no window")  # a planning bug, never bad input
        return (self.sums / coverage[:, None]).astype(np.float32)

"""Window planning, gathering and per-row averaging, checked against plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from gpubatch_jobs.artifacts import window_starts
from gpubatch_jobs.predict.batching import padded
from gpubatch_jobs.predict.windows import RowAverager, plan_windows, window_counts


@pytest.mark.parametrize(
    ("lengths", "window", "stride", "starts", "valid"),
    [
        ([1], 4, 2, [0], [1]),  # shorter than the window: one padded window
        ([4], 4, 2, [0], [4]),  # exactly one window
        ([5], 4, 2, [0, 1], [4, 4]),  # last window aligned to the end
        ([6], 4, 2, [0, 2], [4, 4]),  # stride lands on the end: no extra window
        ([10], 4, 3, [0, 3, 6], [4, 4, 4]),
        ([11], 4, 3, [0, 3, 6, 7], [4, 4, 4, 4]),
        ([3, 9], 4, 4, [0, 3, 7, 8], [3, 4, 4, 4]),  # second document starts at row 3
        ([2, 2, 2], 5, 1, [0, 2, 4], [2, 2, 2]),
        ([7], 1, 1, list(range(7)), [1] * 7),
    ],
)
def test_plan_table(lengths: list[int], window: int, stride: int, starts: list[int], valid: list[int]) -> None:
    doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    plan = plan_windows(doc_starts, np.array(lengths), window, stride)
    assert plan.starts.tolist() == starts
    assert plan.valid.tolist() == valid
    assert plan.n_rows == sum(lengths)


@pytest.mark.parametrize("window", [1, 2, 5, 8])
@pytest.mark.parametrize("stride_part", [1, 2, 3])
def test_plan_matches_the_artifact_contract(window: int, stride_part: int) -> None:
    stride = max(1, window // stride_part)
    lengths = np.array([1, 2, 3, 5, 8, 13, 21, 34, 55])
    doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    plan = plan_windows(doc_starts, lengths, window, stride)
    expected = [int(s + start) for s, n in zip(doc_starts, lengths, strict=True) for start in window_starts(int(n), window, stride)]
    assert plan.starts.tolist() == expected
    assert window_counts(lengths, window, stride).sum() == plan.n_windows
    coverage = plan.coverage()
    assert coverage.min() >= 1  # every row is covered
    naive = np.zeros(plan.n_rows, int)
    for start, valid in zip(plan.starts, plan.valid, strict=True):
        naive[start:start + valid] += 1
    assert coverage.tolist() == naive.tolist()


@pytest.mark.parametrize(("window", "stride"), [(0, 1), (3, 0), (3, 4)])
def test_plan_rejects_impossible_settings(window: int, stride: int) -> None:
    with pytest.raises(ValueError):
        plan_windows(np.array([0]), np.array([5]), window, stride)


def test_padded_batches_keep_one_shape() -> None:
    plan = plan_windows(np.array([0]), np.array([9]), 4, 2)
    rows, mask = padded(*plan.row_index(2, plan.n_windows), 8)
    assert rows.shape == mask.shape == (8, 4)
    assert not mask[plan.n_windows - 2:].any()


def test_average_matches_a_loop_over_windows() -> None:
    rng = np.random.default_rng(0)
    lengths = np.array([1, 3, 6, 9, 17])
    doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    plan = plan_windows(doc_starts, lengths, 5, 2)
    predictions = rng.random((plan.n_windows, 5, 3)).astype(np.float32)
    averager = RowAverager(plan, 3)
    for lo in range(0, plan.n_windows, 4):  # uneven batches, the last one padded
        hi = min(lo + 4, plan.n_windows)
        batch = np.concatenate([predictions[lo:hi], rng.random((4 - (hi - lo), 5, 3))])
        averager.add(lo, hi, batch)
    sums = np.zeros((plan.n_rows, 3))
    counts = np.zeros(plan.n_rows)
    for w, (start, valid) in enumerate(zip(plan.starts, plan.valid, strict=True)):
        for step in range(valid):
            sums[start + step] += predictions[w, step]
            counts[start + step] += 1
    np.testing.assert_allclose(averager.mean(), sums / counts[:, None], atol=1e-6)

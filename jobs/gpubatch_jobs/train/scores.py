"""Classification scores from true and predicted class ids: accuracy, macro F1, per class.

Plain numpy, so the engine needs no scikit-learn; the numbers match
sklearn.metrics (zero_division=0).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return matrix


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """accuracy, macroF1, weightedF1, perClass {name: precision, recall, f1, support}, confusion."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    matrix = confusion(y_true, y_pred, len(classes))
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    present = support > 0
    total = max(1, len(y_true))
    return {
        "samples": int(len(y_true)),
        "accuracy": float(true_pos.sum() / total),
        "macroF1": float(f1[present].mean()) if present.any() else 0.0,
        "weightedF1": float((f1 * support).sum() / total),
        "perClass": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion": matrix.tolist(),
    }


def predict_classes(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(probabilities).argmax(axis=-1)


def score_model(model: Any, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, classes: list[str],
                batch_size: int) -> dict[str, Any]:
    """Scores of `model` on (x, y); for windows, only steps where `mask` > 0 count."""
    predicted = predict_classes(model, x, batch_size)
    if mask is not None:
        keep = mask > 0
        return classification_scores(y[keep], predicted[keep], classes)
    return classification_scores(y, predicted, classes)


def merge_windows(probabilities: np.ndarray, plan: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows covered, class id per covered row): overlapping windows averaged per row."""
    n_classes = probabilities.shape[-1]
    total = np.zeros((n_rows, n_classes), dtype=np.float64)
    hits = np.zeros(n_rows, dtype=np.int64)
    for k, (first, length) in enumerate(plan):
        total[first:first + length] += probabilities[k, :length]
        hits[first:first + length] += 1
    covered = np.flatnonzero(hits)
    return covered, total[covered].argmax(axis=-1)


def score_windows(model: Any, x: np.ndarray, plan: np.ndarray, row_labels: np.ndarray, classes: list[str],
                  batch_size: int) -> dict[str, Any]:
    """Per-row scores of a sequence model: each row once, its windows' probabilities averaged."""
    probabilities = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    rows, predicted = merge_windows(probabilities, plan, len(row_labels))
    return classification_scores(row_labels[rows], predicted, classes)

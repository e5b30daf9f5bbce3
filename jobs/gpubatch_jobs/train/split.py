"""Seeded train/validation splits, the feature scaler, and balanced class weights.

Tabular and image rows are split per class (so every class is validated);
sequence data is split by document, so no document's lines leak from the
training part into the validation part through overlapping windows. The
scaler is fitted on the training part only.
"""

from __future__ import annotations

import numpy as np

from gpubatch_jobs.errors import BadInput


def stratified_split(class_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices); each class gives round(n*fraction) rows, at least one."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(class_ids):
        members = rng.permutation(np.flatnonzero(class_ids == cls))
        n_val = 0
        if fraction > 0 and len(members) >= 2:
            n_val = int(min(max(round(len(members) * fraction), 1), len(members) - 1))
        val.append(members[:n_val])
        train.append(members[n_val:])
    train_idx = rng.permutation(np.concatenate(train))
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def document_split(documents: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training documents, validation documents), chosen at random with the seed."""
    if fraction <= 0:
        return list(documents), []
    if len(documents) < 2:
        raise BadInput(
            f"validationSplit {fraction} needs at least two documents to hold one out, "
            f"but the input has {len(documents)}; set validationSplit: 0 or add documents",
            field="spec.validationSplit",
        )
    order = np.random.default_rng(seed).permutation(len(documents))
    n_val = int(min(max(round(len(documents) * fraction), 1), len(documents) - 1))
    val = [documents[i] for i in sorted(order[:n_val])]
    train = [documents[i] for i in sorted(order[n_val:])]
    return train, val


def fit_scaler(features: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-column mean and standard deviation (1 for constant columns)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return [float(v) for v in mean], [float(v) for v in scale]


def balanced_class_weights(class_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (nClasses * count_c), as scikit-learn's 'balanced'; 0 for a class absent from training."""
    counts = np.bincount(class_ids, minlength=n_classes).astype(np.float64)
    total = counts.sum()
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = total / (present.sum() * counts[present])
    return weights

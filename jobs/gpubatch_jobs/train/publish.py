"""Write the finished artifact: metrics, curves, preprocessing, summary, then the model.

Every file is written under a temporary name and renamed into place; the
model goes last, because its presence is what tells a reader (PredictJob, a
user, a restarted pod) that the folder is complete. Re-training over a
finished folder first takes the old model away, so a half-replaced folder
never looks finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpubatch_jobs.artifacts import (
    CURVES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    SUMMARY_FILE,
    Preprocessing,
    write_text_atomic,
)
from gpubatch_jobs.storage import Place


def _partial(folder: Path, name: str) -> Path:
    stem, dot, suffix = name.partition(".")
    # Keras insists on the .keras suffix, so keep the extension at the end.
    return folder / f".{stem}.partial-{os.getpid()}{dot}{suffix}"


def unpublish(place: Place) -> None:
    """Take a finished model away before the folder is rewritten (the remote copy first)."""
    for name in (MODEL_FILE, SUMMARY_FILE):
        place.delete(name)
        try:
            place.path(name).unlink()
        except FileNotFoundError:
            pass


def plot_curves(history: dict[str, list[float]], path: Path, title: str,
                overlays: dict[str, dict[str, list[float]]] | None = None) -> Any:
    """Loss and accuracy per epoch; `overlays` ({label: history}) draws other runs on the same axes
    (e.g. a one-worker run beside a multi-worker one). Returns the figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100)
    epochs = history.get("epoch", [])
    for position, metric in enumerate(("loss", "accuracy"), start=1):
        axes = figure.add_subplot(1, 2, position)
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if key in history:
                axes.plot(epochs, history[key], style, markersize=3, label=key)
        for label, other in (overlays or {}).items():
            for key, style in ((metric, ":^"), (f"val_{metric}", ":v")):
                if key in other:
                    axes.plot(other.get("epoch", []), other[key], style, markersize=3, alpha=0.8,
                              label=f"{key} ({label})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    return figure


def publish(place: Place, *, model: Any, prep: Preprocessing, metrics: dict[str, Any], summary: dict[str, Any],
            title: str) -> None:
    folder = place.local_dir
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / METRICS_FILE, json.dumps(metrics, indent=2, default=str))
    curves = _partial(folder, CURVES_FILE)
    plot_curves(metrics["history"], curves, title)
    os.replace(curves, folder / CURVES_FILE)
    write_text_atomic(folder / PREPROCESSING_FILE, json.dumps(prep.to_json(), indent=2))
    write_text_atomic(folder / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True, default=str))
    staged = _partial(folder, MODEL_FILE)
    model.save(staged)
    os.replace(staged, folder / MODEL_FILE)
    # object store: the same order, one whole object each, the model last.
    for name in (METRICS_FILE, CURVES_FILE, PREPROCESSING_FILE, SUMMARY_FILE, MODEL_FILE):
        place.push(name)

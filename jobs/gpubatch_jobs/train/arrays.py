"""Read a data array and its labels from HDF5 (RenderJob output) or npz.

The dataset names come from `spec.input.dataset` and `spec.input.labels`;
unset, `images` (cnn) or `features` (dnn) and `labels` are used. A missing
dataset is a BadInput that lists the ones the file does hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpubatch_jobs.errors import BadInput

DEFAULT_DATASETS = {"images": ("images", "x"), "features": ("features", "x")}
DEFAULT_LABELS = ("labels", "y")


def _pick(available: list[str], declared: str | None, defaults: tuple[str, ...], field: str, path: Path) -> str:
    if declared:
        if declared not in available:
            raise BadInput(f"dataset {declared!r} not found in {path.name}; it holds {available}", field=field)
        return declared
    for name in defaults:
        if name in available:
            return name
    raise BadInput(f"none of the datasets {list(defaults)} is in {path.name} (it holds {available}); "
                   f"name the right one in {field}", field=field)


def read_arrays(path: Path, fmt: str, dataset: str | None, labels: str | None, *,
                kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(data, labels) arrays; `kind` is "images" or "features" and picks the default dataset name."""
    if not path.is_file():
        raise BadInput("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise BadInput("the file is empty", path=str(path))
    if fmt == "npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                data_name = _pick(names, dataset, DEFAULT_DATASETS[kind], "spec.input.dataset", path)
                label_name = _pick(names, labels, DEFAULT_LABELS, "spec.input.labels", path)
                data, label_values = archive[data_name], archive[label_name]
        except (OSError, ValueError) as err:
            raise BadInput(f"cannot read it as npz: {err}", path=str(path)) from err
    else:
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                names = [name for name in handle if isinstance(handle[name], h5py.Dataset)]
                data_name = _pick(names, dataset, DEFAULT_DATASETS[kind], "spec.input.dataset", path)
                label_name = _pick(names, labels, DEFAULT_LABELS, "spec.input.labels", path)
                data, label_values = handle[data_name][()], handle[label_name][()]
        except OSError as err:
            raise BadInput(f"cannot read it as HDF5: {err}", path=str(path)) from err
    if len(data) == 0:
        raise BadInput(f"dataset {data_name!r} is empty", path=str(path))
    if label_values.ndim != 1 or len(label_values) != len(data):
        raise BadInput(f"labels {label_name!r} have shape {label_values.shape} but {data_name!r} has "
                       f"{len(data)} entries; one label per entry is needed", field="spec.input.labels")
    return data, label_values

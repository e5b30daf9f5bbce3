"""Write predictions: one row per input row, published atomically.

Columns: the document id and position (under the input's column names),
`label` (the class with the highest mean probability) and `p_<class>` per
class. Rows keep the input file's order. The file is written under a
temporary sibling name and renamed into place, so the final name never holds
a partial result; a Spark output folder is renamed the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.runtime import atomic_target


def check_target(path: Path, overwrite: bool) -> None:
    """Fail before any work when a finished output is in the way and overwrite is off."""
    if path.exists() and not overwrite:
        raise BadInput("output already exists; set spec.output.overwrite: true to replace it", path=str(path))


def result_columns(ids: np.ndarray, positions: np.ndarray, probabilities: np.ndarray, classes: list[str],
                   id_column: str, position_column: str) -> dict[str, np.ndarray]:
    labels = np.asarray(classes, dtype=object)[np.argmax(probabilities, axis=1)]
    columns: dict[str, np.ndarray] = {id_column: ids, position_column: positions, "label": labels}
    for index, name in enumerate(classes):
        columns[f"p_{name}"] = probabilities[:, index].astype(np.float32)
    return columns


def write_predictions(columns: dict[str, np.ndarray], path: Path, fmt: str) -> None:
    tmp = atomic_target(path)
    try:
        if fmt == "hdf5":
            _write_hdf5(columns, tmp)
        else:
            _write_parquet(columns, tmp)
        publish(tmp, path)
    finally:
        remove(tmp)


def publish(tmp: Path, path: Path) -> None:
    """Move a finished file or folder to its final name (replacing what overwrite allowed)."""
    if not path.exists():
        os.replace(tmp, path)
        return
    # os.replace cannot put a file over a folder (or the reverse): move the old one aside first.
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    os.replace(tmp, path)
    remove(old)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _write_parquet(columns: dict[str, np.ndarray], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    pq.write_table(table, path)


def _write_hdf5(columns: dict[str, np.ndarray], path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for name, values in columns.items():
            if values.dtype == object or values.dtype.kind == "U":
                handle.create_dataset(name, data=np.asarray(values, dtype=object).astype(str).astype(object),
                                      dtype=h5py.string_dtype())
            else:
                handle.create_dataset(name, data=values)
        handle.attrs["classes"] = [name[2:] for name in columns if name.startswith("p_")]

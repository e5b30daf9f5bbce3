"""Sharded output: disjoint parts, one file each, and a virtual dataset presenting them as one.

`shards: N` splits the input's candidates (rows or windows) into N contiguous
ranges; shard i renders range i into `<stem>.shard-0000i-of-0000N.h5` next to
the output (each part resumable like a whole output). The file at the output
path itself is an HDF5 virtual-dataset file whose `images`, `index` and
`labels` concatenate the parts in order, so readers see one `images` dataset.

Who assembles it: every run, after publishing its own part(s), checks whether
all N parts are complete and, if so, writes the virtual file (temp name, then
`os.replace`). In an Indexed Job the last pod to finish therefore assembles it
(pods finishing together both write identical files; the rename makes that
harmless); a run that renders every shard in-process assembles it at the end.
Sources are stored by file name only, so the folder can be moved or mounted
elsewhere: HDF5 looks for them next to the virtual file.

On object storage (`s3://`, `gs://`, `az://`) a virtual file could not reach its sources, so the
output object is a real HDF5 file holding a copy of every part
(`assemble(..., virtual=False)`), built in scratch and uploaded whole; the
parts stay as objects of their own.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from gpubatch_jobs.render.writer import read_fingerprint


def shard_range(count: int, index: int, shards: int) -> tuple[int, int]:
    return index * count // shards, (index + 1) * count // shards


def part_path(final: Path, index: int, shards: int) -> Path:
    suffix = final.suffix or ".h5"
    return final.with_name(f"{final.stem}.shard-{index:05d}-of-{shards:05d}{suffix}")


def complete_parts(final: Path, shards: int, fingerprints: list[str]) -> list[Path] | None:
    """The parts' paths when every one is complete and from this spec, else None."""
    parts = [part_path(final, i, shards) for i in range(shards)]
    for part, fingerprint in zip(parts, fingerprints, strict=True):
        if read_fingerprint(part) != fingerprint:
            return None
    return parts


def assemble(final: Path, parts: list[Path], attrs: dict[str, Any], *, virtual: bool = True) -> int:
    """Write the virtual file (or, `virtual=False`, a copy) at `final` over the complete parts; returns the image count."""
    import h5py

    counts, labelled = [], True
    shape = dtypes = None
    for part in parts:
        with h5py.File(part, "r") as f:
            counts.append(f["images"].shape[0])
            shape = f["images"].shape[1:]
            labelled = labelled and "labels" in f
            dtypes = {name: f[name].dtype for name in ("images", "index", "labels") if name in f}
    assert shape is not None and dtypes is not None
    total = sum(counts)
    names = ["images", "index"] + (["labels"] if labelled else [])
    tmp = final.with_name(f".{final.name}.vds-{uuid.uuid4().hex[:8]}")
    try:
        with h5py.File(tmp, "w", libver="latest") as out:
            for name in names if not virtual else ():
                row_shape = shape if name == "images" else ()
                kwargs: dict[str, Any] = {}
                if name == "images":
                    with h5py.File(parts[0], "r") as f:
                        kwargs["chunks"] = f["images"].chunks if total else None
                data = out.create_dataset(name, shape=(total, *row_shape), dtype=dtypes[name], **kwargs)
                offset = 0
                for part, n in zip(parts, counts, strict=True):
                    with h5py.File(part, "r") as f:
                        for lo in range(0, n, 4096):
                            hi = min(n, lo + 4096)
                            data[offset + lo: offset + hi] = f[name][lo:hi]
                    offset += n
            for name in names if virtual else ():
                row_shape = shape if name == "images" else ()
                layout = h5py.VirtualLayout(shape=(total, *row_shape), dtype=dtypes[name])
                offset = 0
                for part, n in zip(parts, counts, strict=True):
                    if n:
                        layout[offset: offset + n] = h5py.VirtualSource(part.name, name, shape=(n, *row_shape))
                    offset += n
                out.create_virtual_dataset(name, layout, fillvalue=0)
            for key, value in attrs.items():
                out.attrs[key] = value
            out.attrs["count"] = total
            out.attrs["parts"] = [part.name for part in parts]
            out.attrs["virtual"] = virtual
            out.attrs["partCounts"] = counts
            out.attrs["complete"] = True
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return total

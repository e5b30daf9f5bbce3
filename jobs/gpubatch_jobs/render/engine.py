"""RenderJob: sequences in, line-chart images out, on the GPU when one is usable.

    run(spec, ctx) -> summary

1. Open the input (inputs.py) and check the output can be written there.
2. Decide what this run renders: every shard (ctx.shard_index None) or one.
   A part (or whole output) already complete for this very spec is skipped.
3. Pick the device: select_device(ctx.device_instruction(), framework="cupy").
   On the GPU the batch size is sized from free memory unless given;
   out-of-memory halves it (OomBackoff) and rendering goes on; any other GPU
   error finishes the job on the CPU when the instruction says so (recorded in
   `fallbacks`), else exits 75.
4. Render in order through a two-deep pipeline (render batch k+1 while batch k
   is written), committing progress to the resumable writer after each batch.
5. Publish: os.replace to the final name; with shards, the virtual dataset
   once all parts exist; the preview PNG when this run rendered the first images.
   With an object-store output all of this happens in local scratch (storage.Place)
   and each finished file (part, output, preview) is uploaded whole as soon as
   it is complete; a re-run pulls what is published and skips finished parts.

SIGTERM (preemption, eviction, deletion; gpubatch_jobs.preempt) stops the run
after the batch in flight is written and committed: the partial file then
holds every image finished so far (an object-store output uploads it under its
`.partial` name), the run exits 143, and the next run continues at the next image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpubatch_jobs import preempt
from gpubatch_jobs.devices import (
    OomBackoff,
    gpu_memory,
    is_oom_error,
    select_device,
    setup_framework,
)
from gpubatch_jobs.errors import BadInput, GpuUnusable
from gpubatch_jobs.render import gpu as gpu_module
from gpubatch_jobs.render.cpu import CpuRenderer
from gpubatch_jobs.render.geometry import RenderParams
from gpubatch_jobs.render.inputs import Source, open_source
from gpubatch_jobs.render.preview import preview_path, write_preview
from gpubatch_jobs.render.shards import assemble, complete_parts, part_path, shard_range
from gpubatch_jobs.render.writer import ImageWriter, chunk_images, partial_path, read_fingerprint
from gpubatch_jobs.storage import Place

log = logging.getLogger("gpubatch")

CPU_BATCH_BYTES = 32 << 20


@dataclass
class Device:
    """The renderer in use and what happened to it along the way."""

    renderer: Any
    reason: str
    backoff: OomBackoff
    requested_batch: int
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    fall_back_here: bool = False  # the instruction's onGpuFailure is cpu: finish on the CPU in this process


@dataclass
class PartResult:
    path: Path
    images: int = 0
    rendered: int = 0
    resumed_from: int = 0
    non_finite: int = 0
    constant: int = 0
    already_complete: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: {"scan": 0.0, "gather": 0.0, "render": 0.0, "write": 0.0})


def _fingerprint(params: RenderParams, source: Source, spec: Any, index: int, shards: int) -> str:
    payload = {"params": params.attrs(), "stride": spec.stride, "input": source.identity,
               "shard": index, "shards": shards, "version": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _check_output(final: Path) -> None:
    if final.is_dir():
        raise BadInput(f"{final} is a folder; name the HDF5 file to write, e.g. {final}/images.h5",
                       field="spec.output.path")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create the output folder {final.parent}: {err}", field="spec.output.path") from err
    if not os.access(final.parent, os.W_OK):
        raise BadInput(f"the output folder {final.parent} is not writable", field="spec.output.path")


def _cpu_batch(params: RenderParams) -> int:
    chunk = chunk_images(params)
    return max(chunk, (CPU_BATCH_BYTES // params.image_bytes) // chunk * chunk)


def _choose_device(spec: Any, ctx: Any, params: RenderParams) -> Device:
    instruction = ctx.device_instruction()
    choice = select_device(instruction, framework="cupy")
    fallbacks: list[dict[str, Any]] = []
    if choice.is_gpu:
        try:
            setup_framework("cupy", choice)
            renderer = gpu_module.CupyRenderer(params)
            memory = gpu_memory()
            free = memory[0][0] if memory else None
            size = spec.batch_size if isinstance(spec.batch_size, int) else gpu_module.auto_batch_size(params, free)
            return Device(renderer, choice.reason, OomBackoff(size), size, [], instruction.fall_back_here)
        except Exception as err:
            if not instruction.fall_back_here:
                raise GpuUnusable(f"the GPU renderer could not start: {type(err).__name__}: {err}") from err
            log.warning("GPU renderer failed to start, using the CPU: %s", err)
            fallbacks.append({"from": "gpu", "to": "cpu", "atImage": 0,
                              "reason": f"{type(err).__name__}: {err}"})
    size = spec.batch_size if isinstance(spec.batch_size, int) else _cpu_batch(params)
    reason = choice.reason if not fallbacks else f"GPU renderer failed: {fallbacks[-1]['reason']}"
    return Device(CpuRenderer(params), reason, OomBackoff(size), size, fallbacks, instruction.fall_back_here)


def _fall_back(device: Device, params: RenderParams, err: BaseException, at: int, spec: Any) -> None:
    if device.renderer.device != "gpu":
        raise err
    if not device.fall_back_here:
        raise GpuUnusable(f"the GPU failed while rendering; exit 75 so the operator re-runs on the CPU "
                          f"when device.fallbackOnGpuFailure (formerly fallbackOnError) allows: "
                          f"{type(err).__name__}: {err}") from err
    log.warning("GPU error at image %d, finishing on the CPU: %s", at, err)
    device.fallbacks.append({"from": "gpu", "to": "cpu", "atImage": at, "reason": f"{type(err).__name__}: {err}"})
    try:
        device.renderer.close()
    except Exception as close_err:  # a broken GPU may fail to clean up too
        log.debug("closing the GPU renderer failed: %s", close_err)
    device.renderer = CpuRenderer(params)
    device.backoff = OomBackoff(_cpu_batch(params) if not isinstance(spec.batch_size, int) else spec.batch_size)


def _render_part(device: Device, source: Source, params: RenderParams, writer: ImageWriter,
                 candidates: np.ndarray, result: PartResult, spec: Any, progress: Any) -> None:
    total = len(candidates)
    labels = source.labels
    pending: deque[tuple[int, int, Any]] = deque()
    submitted = writer.done

    def submit(size: int) -> int:
        stop = min(total, submitted + size)
        t0 = time.perf_counter()
        seqs = source.gather(candidates[submitted:stop])
        t1 = time.perf_counter()
        handle = device.renderer.submit(seqs)
        result.seconds["gather"] += t1 - t0
        result.seconds["render"] += time.perf_counter() - t1
        pending.append((submitted, stop, handle))
        return stop

    while writer.done < total:
        try:
            if submitted < total and len(pending) < device.renderer.depth:
                submitted = device.backoff.run(submit)
                continue
            start, stop, handle = pending.popleft()
            t0 = time.perf_counter()
            images = device.renderer.collect(handle)
            t1 = time.perf_counter()
        except Exception as err:
            if is_oom_error(err) and device.renderer.device != "gpu":
                raise
            _fall_back(device, params, err, writer.done, spec)
            pending.clear()
            submitted = writer.done
            continue
        chosen = candidates[start:stop]
        writer.write(start, images, source.positions(chosen), labels[chosen] if labels is not None else None)
        writer.commit(stop)
        result.seconds["render"] += t1 - t0
        result.seconds["write"] += time.perf_counter() - t1
        result.rendered += stop - start
        progress(stop - start)
        if preempt.requested() and writer.done < total:
            raise preempt.stop()  # the images in flight behind this batch are dropped; the committed ones stay


def run(spec: Any, ctx: Any) -> dict[str, Any]:
    started = time.perf_counter()
    params = RenderParams(spec.seq_len, spec.width, spec.height, float(spec.line_width))
    place, name = ctx.output_file(spec.output.path, field_name="spec.output.path")
    final = place.path(name)
    _check_output(final)
    shards = int(spec.shards)
    if ctx.shard_index is not None and not 0 <= ctx.shard_index < shards:
        raise BadInput(f"shard index {ctx.shard_index} is outside 0..{shards - 1}", field="spec.shards")
    indices = list(range(shards)) if ctx.shard_index is None else [ctx.shard_index]
    source = open_source(spec, ctx)
    try:
        if place.is_remote:
            # What is published already decides what is left: the output, and this run's parts.
            place.pull(final.name)
            for i in indices if shards > 1 else ():
                place.pull(part_path(final, i, shards).name)
        summary = _run(spec, ctx, params, final, shards, indices, source, started, place)
    finally:
        source.close()
    for key in ("output", "preview"):
        summary[key] = place.show(summary[key])
    if summary["parts"]:
        summary["parts"] = [place.show(p) for p in summary["parts"]]
    if summary["assembled"]:
        place.finish()
    return summary


def _run(spec: Any, ctx: Any, params: RenderParams, final: Path, shards: int, indices: list[int],
         source: Source, started: float, place: Place) -> dict[str, Any]:
    fingerprints = [_fingerprint(params, source, spec, i, shards) for i in range(shards)]
    whole_fingerprint = fingerprints[0] if shards == 1 else hashlib.sha256("".join(fingerprints).encode()).hexdigest()
    overwrite = bool(spec.output.overwrite)
    attrs = {"stride": spec.stride, "shards": shards,
             "input": json.dumps(spec.input.wire(), sort_keys=True), "source": source.description,
             "indexMeaning": "input row" if source.layout == "rows" else "first point of the window in the series"}

    results: list[PartResult] = []
    work: list[tuple[int, Path, Any]] = []
    final_done = read_fingerprint(final) == whole_fingerprint and not overwrite
    if final.exists() and not final_done and not overwrite and (shards == 1 or ctx.shard_index is None):
        raise BadInput(f"{final} already exists and was not written by this spec; set spec.output.overwrite: true "
                       "to replace it, or choose another path", field="spec.output.overwrite")
    for i in indices:
        path = final if shards == 1 else part_path(final, i, shards)
        done = final_done or (read_fingerprint(path) == fingerprints[i] and not overwrite)
        if not done and path.exists() and not overwrite and shards > 1:
            raise BadInput(f"{path} already exists and was not written by this spec; set "
                           "spec.output.overwrite: true to replace it", field="spec.output.overwrite")
        work.append((i, path, done))

    scans = {}
    total_images = 0
    for i, path, done in work:
        t0 = time.perf_counter()
        scan = source.scan(*shard_range(source.count, i, shards))
        result = PartResult(path, images=len(scan.valid), non_finite=scan.non_finite, constant=scan.constant,
                            already_complete=done)
        result.seconds["scan"] = time.perf_counter() - t0
        scans[i] = scan
        results.append(result)
        total_images += len(scan.valid)
    if total_images == 0 and (shards == 1 or ctx.shard_index is None):
        skipped = sum(r.non_finite for r in results)
        raise BadInput(f"nothing to render: all {skipped} sequences hold NaN or infinite values",
                       field="spec.input.path")

    device: Device | None = None
    done_images = sum(r.images for r in results if r.already_complete)
    render_started = time.perf_counter()

    def progress(step: int) -> None:
        nonlocal done_images
        done_images += step
        ctx.progress(done_images, total_images, stage="render")

    try:
        for (i, path, done), result in zip(work, results, strict=True):
            if done:
                continue
            if place.is_remote and place.remote_exists(partial_path(path).name):
                place.pull(partial_path(path).name)  # the images a stopped pod finished (uploaded on its SIGTERM)
            writer = ImageWriter(path, result.images, params, fingerprints[i],
                                 None if source.labels is None else source.labels.dtype,
                                 {**attrs, "shardIndex": i})
            try:
                result.resumed_from = writer.done
                done_images += writer.done
                if writer.done < result.images:
                    if device is None:
                        device = _choose_device(spec, ctx, params)
                    with preempt.graceful():
                        _render_part(device, source, params, writer, scans[i].valid, result, spec, progress)
                writer.finish()
            except preempt.Terminated:
                writer.close()
                if partial_path(path).exists():
                    place.push(partial_path(path).name)  # object store: the next pod, anywhere, resumes from it
                checkpoint = {"done": done_images, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "place": place.show(partial_path(path))}
                ctx.progress(done_images, total_images, stage="preempted: finished images saved", force=True,
                             checkpoint=checkpoint, preempted=True)
                raise preempt.stop(checkpoint) from None
            finally:
                writer.close()
            place.push(path.name)  # object store: the part (or output) becomes an object only now, whole
            place.delete(partial_path(path).name)
    finally:
        if device is not None:
            device.renderer.close()
    render_seconds = time.perf_counter() - render_started
    if not any(r.rendered for r in results):
        ctx.progress(done_images, total_images, stage="render", force=True)

    assembled = shards == 1
    count = total_images
    if shards > 1:
        if place.is_remote and not final_done:
            for j in sorted(set(range(shards)) - set(indices)):  # other pods' parts
                place.pull(part_path(final, j, shards).name)
        parts = complete_parts(final, shards, fingerprints)
        if parts is not None and not final_done:
            count = assemble(final, parts, {**params.attrs(), **attrs, "fingerprint": whole_fingerprint},
                             virtual=not place.is_remote)
            place.push(final.name)
            assembled = True
        elif final_done:
            assembled = True
    preview = None
    if spec.preview_images and 0 in indices and total_images:
        preview = _preview(final if assembled else results[0].path, spec.preview_images, final)
        place.push(preview.name)

    rendered = sum(r.rendered for r in results)
    summary: dict[str, Any] = {
        "ok": True,
        "device": device.renderer.device if device else "cpu",
        "renderer": device.renderer.name if device else "none",
        "deviceReason": device.reason if device else "nothing left to render",
        "batchSize": device.backoff.size if device else 0,
        "batchSizeRequested": device.requested_batch if device else 0,
        "oomBackoffs": device.backoff.backoffs if device else 0,
        "fallbacks": device.fallbacks if device else [],
        "images": total_images,
        "rendered": rendered,
        "resumedFrom": sum(r.resumed_from for r in results),
        "alreadyComplete": all(r.already_complete for r in results),
        "candidates": source.count,
        "skipped": {"nonFinite": sum(r.non_finite for r in results)},
        "constantSequences": sum(r.constant for r in results),
        "imagesPerSecond": round(rendered / render_seconds, 1) if rendered and render_seconds > 0 else 0.0,
        "throughputUnit": "images/s",
        "seconds": {k: round(sum(r.seconds[k] for r in results), 3) for k in ("scan", "gather", "render", "write")},
        "output": str(final) if assembled else None,
        "parts": [str(r.path) for r in results] if shards > 1 else None,
        "shards": shards,
        "shardIndex": ctx.shard_index,
        "assembled": assembled,
        "preview": str(preview) if preview else None,
        "elapsedSeconds": round(time.perf_counter() - started, 3),
        **source.notes,
    }
    summary["throughput"] = summary["imagesPerSecond"]
    if shards > 1 and assembled:
        summary["imagesInOutput"] = count
    return summary


def _preview(path: Path, n: int, final: Path) -> Path:
    import h5py

    with h5py.File(path, "r") as f:
        images = f["images"][: min(n, f["images"].shape[0])]
    return write_preview(images, preview_path(final))

"""TrainJob: train a Keras 3 model (dnn, rnn or cnn) on CSV/Parquet/HDF5 data, resumably.

    summary = run(spec, ctx)

The order matters. The data is read and checked first, so bad input fails
fast with nothing written and no framework loaded. Then the Keras backend is
fixed (KERAS_BACKEND, before keras is imported) and the device layer picks
and sets up the device. Training resumes from the last checkpoint in the
output folder when there is one. The artifact (see gpubatch_jobs.artifacts)
is published at the end, the model last. An object-store output is a prefix mirrored
in local scratch (gpubatch_jobs.storage.Place): pulled at the start (so a pod
on another node, or the CPU re-run, resumes from the last epoch), each
checkpoint pushed when written, the artifact pushed model last.

Modules: dataset/tables/arrays/split read and prepare data; backend chooses
backend, device and precision; models builds the networks; loop runs the
epochs; checkpoints stores resume state; scores and publish write results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from gpubatch_jobs import preempt
from gpubatch_jobs.artifacts import SUMMARY_FILE, is_finished
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.storage import Place

log = logging.getLogger("gpubatch.train")

# Spec fields that change what is learnt; a finished artifact or a checkpoint
# made under different values is not reused. `epochs` and the patience are left
# out of the checkpoint check, so a run may be extended.
_LEARNING_FIELDS = ("model", "batchSize", "learningRate", "validationSplit", "classWeight", "backend", "seed", "input")


def spec_fingerprints(spec: Any) -> tuple[str, str]:
    """(whole-run fingerprint, checkpoint fingerprint) of the spec fields that shape the result."""
    from gpubatch_jobs.train.checkpoints import fingerprint

    wire = spec.wire()
    learning = {key: wire.get(key) for key in _LEARNING_FIELDS}
    run_print = fingerprint({**learning, "epochs": wire.get("epochs"),
                             "earlyStoppingPatience": wire.get("earlyStoppingPatience")})
    return run_print, fingerprint(learning)


def run(spec: Any, ctx: RunContext) -> dict[str, Any]:
    started = time.monotonic()
    place = ctx.output_folder(spec.output.path, field_name="spec.output.path")
    if place.is_remote:  # object store: the published artifact and checkpoints, mirrored into scratch
        place.pull_all()
    output = place.local_dir
    run_print, checkpoint_print = spec_fingerprints(spec)
    if output.exists() and not output.is_dir():
        raise BadInput("the TrainJob output is a folder, but a file is there", field="spec.output.path")
    if is_finished(output):
        previous = _finished_summary(output)
        if not spec.output.overwrite:
            if previous is not None and previous.get("specFingerprint") == run_print:
                log.info("%s already holds the finished model of this spec; nothing to do", place.show(output))
                return {**previous, "alreadyFinished": True}
            raise BadInput(f"{place.show(output)} already holds a finished model from another spec; "
                           "set output.overwrite: true to replace it, or choose a new path",
                           field="spec.output.path")

    from gpubatch_jobs.train.dataset import load_training_data

    data = load_training_data(spec, ctx)
    if data.n_train == 0:
        raise BadInput("no training samples are left after the validation split", field="spec.validationSplit")

    from gpubatch_jobs.train.backend import apply_precision, prepare_runtime
    from gpubatch_jobs.train.distributed import WorkerGroup

    group = WorkerGroup.from_env(spec)
    runtime = prepare_runtime(spec.backend, ctx.device_instruction(), spec.mixed_precision,
                              group=group)
    if group is not None:
        preempt.reclaim()  # the group's runtime may have set a SIGTERM handler of its own
    import keras

    apply_precision(runtime)
    summary = _train(spec, ctx, place, data, runtime, run_print, checkpoint_print, started, keras, group)
    place.finish()
    return summary


def _finished_summary(output: Path) -> dict[str, Any] | None:
    try:
        return json.loads((output / SUMMARY_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _train(spec: Any, ctx: RunContext, place: Place, data: Any, runtime: Any, run_print: str,
           checkpoint_print: str, started: float, keras: Any, group: Any = None) -> dict[str, Any]:

    from gpubatch_jobs.train.checkpoints import CheckpointStore, TrainState
    from gpubatch_jobs.train.loop import fit, monitored_metric
    from gpubatch_jobs.train.models import build_model, compile_model
    from gpubatch_jobs.train.publish import publish, unpublish

    output = place.local_dir
    store = CheckpointStore(output, checkpoint_print, place=place)
    chief = group is None or group.is_chief
    if is_finished(output) and chief:  # overwrite: true (the other cases returned or raised above)
        unpublish(place)
        store.clear()
    state, resumed_from, resumed_step = TrainState(), 0, 0
    loaded = None
    if store.exists():
        try:
            loaded = store.load()
        except BadInput:
            if not spec.output.overwrite:
                raise
            log.warning("discarding checkpoints of a different spec in %s (output.overwrite is true)",
                        place.show(output))
            store.clear()
    if loaded is not None:
        state, _ = loaded
        resumed_from, resumed_step = state.epoch, state.step
        if state.step:
            log.info("resuming at step %d of epoch %d from %s", state.step, state.epoch + 1, place.show(store.folder))
        else:
            log.info("resuming after epoch %d from %s", state.epoch, place.show(store.folder))

    keras.utils.set_random_seed(spec.seed)
    prep = data.prep
    with group.scope() if group is not None else contextlib.nullcontext():
        model = build_model(spec.model, n_features=prep.n_features, n_classes=prep.n_classes,
                            window_size=prep.window_size, image_shape=prep.image_shape)
        compile_model(model, learning_rate=spec.learning_rate, model_type=spec.model.type)
    # Worker 0 alone writes checkpoints; every worker reads them to resume at the same step.
    # On SIGTERM (gpubatch_jobs.preempt) a single process stops after the step in flight and
    # saves it; a TensorFlow group first agrees on the step (train/loop.py), then worker 0 saves
    # it. A JAX group stops at once and resumes from its last epoch checkpoint.
    writer = store if spec.checkpoints and chief else None
    stops_at_step = bool(spec.checkpoints) and (group is None or group.stops_at_a_step)
    with preempt.graceful() if stops_at_step else contextlib.nullcontext():
        result = fit(model, data, spec, ctx, state, writer, {"preprocessing": prep.to_json()}, group=group)

    optimizer_steps = _optimizer_steps(model)
    if group is not None and group.backend == "jax":
        # A JAX group's variables span every process's devices, which no process may
        # read whole: score and save a local copy holding the final weights.
        model = _local_copy(keras, model, state, spec, prep)
    ctx.progress(1, 1, stage="scoring", force=True)
    validation = _final_scores(model, data, result.batch_size)
    samples_per_second = result.samples_this_run / result.seconds_this_run if result.epochs_this_run else None
    history = state.history
    monitor = monitored_metric(data)
    workers = group.as_dict(spec.batch_size) if group is not None else {
        "total": 1, "index": 0, "perWorkerBatchSize": result.batch_size, "globalBatchSize": result.batch_size}
    metrics = {
        "modelType": spec.model.type,
        "epochs": state.epoch,
        "epochsThisRun": result.epochs_this_run,
        "resumedFromEpoch": resumed_from,
        "resumedFrom": {"epoch": resumed_from, "step": resumed_step} if loaded is not None else None,
        "stoppedEarly": state.stopped_early,
        "history": history,
        "validation": validation,
        "monitor": monitor,
        "classes": prep.classes,
        "classWeights": data.class_weights,
        "trainClassCounts": data.train_class_counts(),
        "samples": {"unit": data.sample_unit, "train": data.n_train, "validation": data.n_val,
                    "inputRows": data.input_rows, "documents": data.documents},
        "samplesPerSecond": samples_per_second,
        "trainSeconds": round(sum(history.get("seconds", [])), 3),
        "batchSize": result.batch_size,
        "oomBackoffs": result.backoffs,
        "optimizerStateRestored": result.optimizer_restored,
        "parameters": int(model.count_params()),
        "optimizerSteps": optimizer_steps,
        "workers": workers,
        **runtime.as_dict(),
    }
    summary = {
        "ok": True,
        "kind": "TrainJob",
        "modelType": spec.model.type,
        "device": runtime.device,
        "backend": runtime.backend,
        "deviceReason": runtime.choice.reason,
        "fallbacks": [runtime.choice.reason] if runtime.choice.fell_back else [],
        "mixedPrecision": runtime.mixed_precision,
        "batchSize": result.batch_size,
        "perWorkerBatchSize": workers["perWorkerBatchSize"],
        "workers": workers,
        "oomBackoffs": result.backoffs,
        "throughput": samples_per_second,
        "samplesPerSecond": samples_per_second,
        "items": {"unit": data.sample_unit, "train": data.n_train, "validation": data.n_val,
                  "inputRows": data.input_rows},
        "epochs": state.epoch,
        "resumedFromEpoch": resumed_from,
        "resumedFrom": {"epoch": resumed_from, "step": resumed_step} if loaded is not None else None,
        "stoppedEarly": state.stopped_early,
        "metrics": {
            "scoredOn": validation["scoredOn"],
            "accuracy": validation["accuracy"],
            "macroF1": validation["macroF1"],
            "finalLoss": history.get("loss", [None])[-1],
            "finalValLoss": history.get("val_loss", [None])[-1],
        },
        "ignoredColumns": data.ignored_columns,
        "output": place.show(output),
        "specFingerprint": run_print,
        "elapsedSeconds": round(time.monotonic() - started, 3),
    }
    title = f"{ctx.name}: {spec.model.type} on {runtime.device} ({runtime.backend})"
    if group is not None:
        title += f", {group.count} workers"
    if not chief:  # worker 0 publishes the group's artifact
        ctx.progress(1, 1, stage="done", force=True)
        return {**summary, "published": False}
    publish(place, model=model, prep=prep, metrics=metrics, summary=summary, title=title)
    ctx.progress(1, 1, stage="done", force=True)
    return summary


def _local_copy(keras: Any, model: Any, state: Any, spec: Any, prep: Any) -> Any:
    from gpubatch_jobs.train.models import build_model, compile_model

    keras.distribution.set_distribution(None)
    local = build_model(spec.model, n_features=prep.n_features, n_classes=prep.n_classes,
                        window_size=prep.window_size, image_shape=prep.image_shape)
    compile_model(local, learning_rate=spec.learning_rate, model_type=spec.model.type)
    for variable, array in zip(local.weights, state.weights, strict=True):
        variable.assign(array)
    return local


def _optimizer_steps(model: Any) -> int | None:
    """Updates the optimizer applied in all (a group counts one per global batch)."""
    try:
        return int(model.optimizer.iterations.numpy())
    except (AttributeError, TypeError, ValueError):
        return None


def _final_scores(model: Any, data: Any, batch_size: int) -> dict[str, Any]:
    from gpubatch_jobs.train.scores import score_model, score_windows

    if data.n_val:
        x, y, where = data.x_val, data.y_val, "validation"
    else:  # validationSplit 0: the only honest label is "training"
        x, y, where = data.x_train, data.y_train, "training"
    if data.prep.model_type == "rnn" and where == "validation":
        scores = score_windows(model, x, data.val_windows, data.val_labels, data.prep.classes, batch_size)
        scores["unit"] = "rows"
    else:
        mask = data.mask_train if data.prep.model_type == "rnn" else None
        scores = score_model(model, x, y, mask, data.prep.classes, batch_size)
        scores["unit"] = "rows" if data.prep.model_type != "cnn" else "images"
    return {"scoredOn": where, **scores}


__all__ = ["run", "spec_fingerprints"]

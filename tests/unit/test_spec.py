"""The API models: defaults, and bad manifests rejected with the field named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpubatch_jobs.spec import (
    PredictJob,
    RenderJob,
    SpecError,
    TrainJob,
    parse_duration,
    parse_manifest,
    parse_spec,
)

RENDER: dict[str, Any] = {
    "apiVersion": "gpubatch.dev/v1alpha1",
    "kind": "RenderJob",
    "metadata": {"name": "prices"},
    "spec": {"input": {"path": "pvc://data/prices.h5", "dataset": "close"}, "output": {"path": "pvc://out/images.h5"}},
}
TRAIN: dict[str, Any] = {
    "apiVersion": "gpubatch.dev/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "leads"},
    "spec": {"input": {"path": "data/leads.csv", "labels": "converted"}, "output": {"path": "out/model"},
             "model": {"type": "dnn"}},
}
PREDICT: dict[str, Any] = {
    "apiVersion": "gpubatch.dev/v1alpha1",
    "kind": "PredictJob",
    "metadata": {"name": "lines"},
    "spec": {"input": {"path": "data/lines.parquet"}, "output": {"path": "out/pred.parquet"}, "model": "out/model"},
}


def with_change(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


class _Delete:
    """Marks a field to remove; its repr is stable, so parallel workers collect the same test ids."""

    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()


def test_defaults_fill_in() -> None:
    job = parse_manifest(RENDER)
    assert isinstance(job, RenderJob)
    spec = job.spec
    assert (spec.seq_len, spec.width, spec.height, spec.batch_size, spec.shards) == (100, 224, 224, "auto", 1)
    assert spec.device.policy == "auto" and spec.device.gpus == 1
    assert spec.wire()["device"]["gpuPendingTimeout"] == "5m"
    assert isinstance(parse_manifest(TRAIN), TrainJob)
    assert isinstance(parse_manifest(PREDICT), PredictJob)


def test_wire_form_round_trips_through_parse_spec() -> None:
    spec = parse_manifest(TRAIN).spec
    again = parse_spec("TrainJob", spec.wire())
    assert again == spec
    assert parse_spec("train", spec.model_dump_json(by_alias=True)) == spec


def test_batch_size_accepts_auto_or_a_number() -> None:
    assert parse_manifest(with_change(RENDER, "spec.batchSize", 512)).spec.batch_size == 512
    assert parse_manifest(with_change(RENDER, "spec.batchSize", "auto")).spec.batch_size == "auto"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


BAD_MANIFESTS = [
    # (base, path, value, field named, words in the message)
    (RENDER, "spec.device.gpus", 0, "spec.device.gpus", "must be >= 1"),
    (RENDER, "spec.device.gpus", 17, "spec.device.gpus", "must be <= 16"),
    (RENDER, "spec.device.policy", "tpu", "spec.device.policy", "'auto', 'gpu' or 'cpu'"),
    (RENDER, "spec.device.gpuPendingTimeout", "5 minutes", "spec.device.gpuPendingTimeout", "duration"),
    (RENDER, "spec.device.gpuPendingTimeout", "0s", "spec.device.gpuPendingTimeout", "positive duration"),
    (RENDER, "spec.seqLen", 1, "spec.seqLen", "must be >= 2"),
    (RENDER, "spec.stride", 0, "spec.stride", "must be >= 1"),  # a field name that starts like a union tag
    (RENDER, "spec.seqlen", 50, "spec.seqlen", "unknown field"),
    (RENDER, "spec.width", 4, "spec.width", "must be >= 8"),
    (RENDER, "spec.lineWidth", 0, "spec.lineWidth", "must be > 0"),
    (RENDER, "spec.batchSize", 0, "spec.batchSize", "'auto'"),
    (RENDER, "spec.batchSize", "huge", "spec.batchSize", "'auto'"),
    (RENDER, "spec.shards", 0, "spec.shards", "must be >= 1"),
    (RENDER, "spec.input", DELETE, "spec.input", "required"),
    (RENDER, "spec.input.path", "", "spec.input.path", "must not be empty"),
    (RENDER, "spec.input.path", "ftp://bucket/x", "spec.input.path", "gs://BUCKET/OBJECT"),
    (RENDER, "spec.input.format", "xlsx", "spec.input.format", "hdf5"),
    (RENDER, "spec.output.path", "pvc://Bad_Claim/x", "spec.output.path", "pvc://CLAIM"),
    (RENDER, "spec.queueName", "Team A", "spec.queueName", "DNS label"),
    (RENDER, "spec.backoffLimit", -1, "spec.backoffLimit", "must be >= 0"),
    (RENDER, "spec.tolerations", [{"operator": "Maybe"}], "spec.tolerations[0].operator", "'Exists' or 'Equal'"),
    (RENDER, "spec.resources", {"limits": {"memory": "lots"}}, "spec.resources.limits.memory", "quantity"),
    (RENDER, "spec.fallbackOnError", "sometimes", "spec.fallbackOnError", "true or false"),
    (RENDER, "metadata.name", "Bad_Name", "metadata.name", "DNS label"),
    (TRAIN, "spec.model.type", "transformer", "spec.model.type", "'dnn', 'rnn' or 'cnn'"),
    (TRAIN, "spec.model", DELETE, "spec.model", "required"),
    (TRAIN, "spec.epochs", 0, "spec.epochs", "must be >= 1"),
    (TRAIN, "spec.learningRate", 0, "spec.learningRate", "must be > 0"),
    (TRAIN, "spec.validationSplit", 1.0, "spec.validationSplit", "must be < 1"),
    (TRAIN, "spec.backend", "mxnet", "spec.backend", "'tensorflow', 'torch' or 'jax'"),
    (TRAIN, "spec.model.dropout", 1.5, "spec.model.dropout", "must be < 1"),
    (TRAIN, "spec.model.hiddenUnits", [64, 0], "spec.model", "hiddenUnits[1]"),
    (TRAIN, "spec.model.layers", 9, "spec.model.layers", "must be <= 8"),
    (TRAIN, "spec.model.cell", "rnn", "spec.model.cell", "'lstm' or 'gru'"),
    (PREDICT, "spec.model", DELETE, "spec.model", "required"),
    (PREDICT, "spec.engine", "dask", "spec.engine", "'local' or 'spark'"),
    (PREDICT, "spec.windowSize", 0, "spec.windowSize", "must be >= 1"),
    (PREDICT, "spec.spark", {"gpuInUdf": True}, "spec", "engine: spark"),
    (PREDICT, "spec.spark", {"executors": 0}, "spec.spark.executors", "must be >= 1"),
    (PREDICT, "spec.verbosity", "loud", "spec.verbosity", "integer"),
    (PREDICT, "apiVersion", "gpubatch.dev/v1", "apiVersion", "gpubatch.dev/v1alpha1"),
]


@pytest.mark.parametrize(("base", "path", "value", "field", "words"), BAD_MANIFESTS,
                         ids=[f"{b['kind']}:{p}={v!r}"[:60] for b, p, v, *_ in BAD_MANIFESTS])
def test_bad_manifest_names_the_field(base: dict[str, Any], path: str, value: Any, field: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_manifest(with_change(base, path, value))
    lines = [line for line in caught.value.problems if line.startswith(f"{field}:")]
    assert lines, f"no problem names {field}: {caught.value.problems}"
    assert words in lines[0], lines[0]


def test_stride_larger_than_window_is_refused() -> None:
    doc = with_change(with_change(PREDICT, "spec.windowSize", 10), "spec.stride", 11)
    with pytest.raises(SpecError, match=r"stride \(11\) must be <= windowSize \(10\)"):
        parse_manifest(doc)


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(SpecError, match="RenderJob, TrainJob, PredictJob"):
        parse_manifest({**RENDER, "kind": "PaintJob"})


def test_parse_spec_prefixes_paths_with_spec() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("render", {"input": {"path": "x"}, "output": {"path": "y"}, "height": 0})
    assert caught.value.problems == ["spec.height: must be >= 8 (got 0)"]

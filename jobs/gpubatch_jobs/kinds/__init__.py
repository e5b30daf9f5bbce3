"""A kind is one plug-in: the one declaration everything else about a kind derives from.

Each kind (RenderJob, TrainJob, PredictJob) is a `KindPlugin` declared in one
module beside this one (`render.py`, `train.py`, `predict.py`):

- its contract row (`gpubatch_jobs.contract.KindInfo`: kind, plural, singular,
  short name, the entrypoint's word);
- its resource model (apiVersion, kind, metadata, spec, status), whose spec
  model the CRD is generated from and every side validates with;
- its engine: the module whose `run(spec, ctx) -> dict` does the work,
  imported only when a job runs (it may import heavy frameworks);
- optional pod-shape hooks, small protocols below: `Shards` (independent pods
  of one Indexed Job), `WorkerGroup` (pods training as one group, and what
  batchSize means across them), `SparkDriver` (the pod makes executor pods and
  needs the Spark driver's identity); and which spec fields name data.

The CRDs (`gpubatch crds`), manifest parsing, the operator's handlers and
children (decide(), the builders, RBAC), the Python client and the CLI all
read `KINDS` and ask a plug-in's hooks; none tests a kind's name. Adding a
kind is one module here plus its name in `_BUILT_IN` (docs/architecture.md,
"Adding a kind"); `register()` takes a plug-in at run time too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from pydantic import create_model

from gpubatch_jobs.contract import API, KindInfo
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_jobs.spec.kinds import GpubatchResource

if TYPE_CHECKING:
    from gpubatch_jobs.runtime import RunContext


class Shards(Protocol):
    """Independent pods of one Indexed Job: pod i takes share i (JOB_COMPLETION_INDEX)."""

    @property
    def field(self) -> str:
        """The spec field (`gpubatch run --shard i/N` checks N against it)."""
        ...

    def count(self, spec: Any) -> int: ...


class WorkerGroup(Protocol):
    """Pods that run as one group with the framework's own multi-worker engine: an Indexed
    Job, a headless Service for their names, gang semantics (one fails, the group restarts)."""

    @property
    def field(self) -> str:
        """The spec field giving the group's size (`gpubatch run --workers N` overrides it)."""
        ...

    def size(self, spec: Any) -> int: ...

    def batch_per_worker(self, spec: Any) -> int | None:
        """What each worker takes per step (status.workers.perWorkerBatchSize); None: no batch."""
        ...


class SparkDriver(Protocol):
    """The job pod is a Spark driver that makes executor pods: it runs as the driver identity."""

    def makes_executor_pods(self, spec: Any) -> bool: ...


def input_and_output(spec: CommonSpec) -> list[str]:
    """The data paths every kind has (their pvc:// claims are mounted)."""
    return [spec.input.path, spec.output.path]


@dataclass(frozen=True)
class KindPlugin:
    """One kind: everything the operator, the CRDs, the CLI and the client know of it."""

    info: KindInfo
    spec: type[CommonSpec]
    engine: str  # the module exposing run(spec, ctx) -> dict, imported when a job runs
    resource: type[GpubatchResource] | None = None  # made from info.kind and spec when omitted
    data_paths: Callable[[Any], list[str]] = input_and_output
    shards: Shards | None = None
    worker_group: WorkerGroup | None = None
    spark_driver: SparkDriver | None = None
    model: type[GpubatchResource] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        literal: Any = Literal[self.info.kind]  # a kind made at run time: its name is a value
        model = self.resource or create_model(
            self.info.kind, __base__=GpubatchResource, __module__=__name__,
            kind=(literal, ...), spec=(self.spec, ...))
        object.__setattr__(self, "model", model)

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def plural(self) -> str:
        return self.info.plural

    @property
    def command(self) -> str:
        return self.info.command

    # What shared code asks, with the answer for a kind without the hook.

    def shard_count(self, spec: Any) -> int:
        return self.shards.count(spec) if self.shards is not None else 1

    def group_size(self, spec: Any) -> int:
        return self.worker_group.size(spec) if self.worker_group is not None else 1

    def is_spark_driver(self, spec: Any) -> bool:
        return self.spark_driver is not None and self.spark_driver.makes_executor_pods(spec)

    def run(self, spec: CommonSpec, ctx: RunContext) -> dict[str, Any]:
        """Import the engine and run it; the summary names the kind."""
        module = importlib.import_module(self.engine)
        summary = cast(dict[str, Any], module.run(spec, ctx))
        summary.setdefault("kind", self.kind)
        return summary


KINDS: dict[str, KindPlugin] = {}


def register(plugin: KindPlugin) -> KindPlugin:
    """Add a kind; its kind, plural, short name and command must be new."""
    taken = {word: other.kind for other in KINDS.values()
             for word in (other.kind.lower(), other.plural, other.info.singular, other.info.short_name,
                          other.command)}
    info = plugin.info
    for word in {info.kind.lower(), info.plural, info.singular, info.short_name, info.command}:
        if word in taken and taken[word] != info.kind:
            raise ValueError(f"kind {info.kind}: {word!r} already names {taken[word]}")
    KINDS[info.kind] = plugin
    return plugin


def find(name: str) -> KindPlugin:
    """The kind for `RenderJob`, `renderjob`, `renderjobs`, `rj` or `render` (any case)."""
    word = name.strip().lower()
    for plugin in KINDS.values():
        info = plugin.info
        if word in (info.kind.lower(), info.plural, info.singular, info.short_name, info.command):
            return plugin
    raise KeyError(f"unknown kind {name!r}; expected one of {', '.join(KINDS)}")


def spec_class(kind: str) -> type[CommonSpec]:
    return find(kind).spec


def plurals() -> list[str]:
    return [plugin.plural for plugin in KINDS.values()]


__all__ = ["API", "KINDS", "KindPlugin", "Shards", "SparkDriver", "WorkerGroup", "find", "plurals", "register",
           "spec_class"]


# The kinds that ship: one module each under gpubatch_jobs/kinds/, holding PLUGIN.
_BUILT_IN = ("render", "train", "predict")
for _name in _BUILT_IN:
    register(importlib.import_module(f"{__name__}.{_name}").PLUGIN)

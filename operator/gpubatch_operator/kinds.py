"""The small interface through which each kind plugs into the one reconciler.

RenderJob, TrainJob and PredictJob differ in four things only: the word the
pod's entrypoint takes (`gpubatch-job render`, from the contract's kinds
table, gpubatch_jobs/contract.py), which spec fields name data
locations (so their claims get mounted), and how many pods the Job runs
(RenderJob `shards` makes an Indexed Job), and whether those pods are one
training group (TrainJob `workers`: also an Indexed Job, plus a headless Service). Everything else — device choice,
fallback, status, events — is shared and lives in the generic reconciler.
"""

from __future__ import annotations

from typing import Protocol

from gpubatch_jobs.contract import API, KINDS
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_jobs.spec.kinds import PredictJobSpec, RenderJobSpec, TrainJobSpec


class JobKind(Protocol):
    """What the reconciler needs to know about one kind."""

    @property
    def kind(self) -> str:
        """RenderJob"""
        ...

    @property
    def plural(self) -> str:
        """renderjobs"""
        ...

    @property
    def command(self) -> str:
        """render, as in `gpubatch-job render`"""
        ...

    def data_paths(self, spec: CommonSpec) -> list[str]:
        """Every path in the spec that may name a pvc:// claim."""
        ...

    def shards(self, spec: CommonSpec) -> int:
        """Pods of the Job; more than one makes an Indexed Job."""
        ...

    def workers(self, spec: CommonSpec) -> int:
        """Pods training as one group (TrainJob workers): an Indexed Job, a headless
        Service, and gang semantics (one fails, the group restarts)."""
        ...


class _Kind:
    kind: str = ""

    @property
    def plural(self) -> str:
        return KINDS[self.kind].plural

    @property
    def command(self) -> str:
        return KINDS[self.kind].command

    def data_paths(self, spec: CommonSpec) -> list[str]:
        return [spec.input.path, spec.output.path]

    def shards(self, spec: CommonSpec) -> int:
        return 1

    def workers(self, spec: CommonSpec) -> int:
        return 1


class RenderKind(_Kind):
    kind = "RenderJob"

    def shards(self, spec: CommonSpec) -> int:
        assert isinstance(spec, RenderJobSpec)
        return spec.shards


class TrainKind(_Kind):
    kind = "TrainJob"

    def workers(self, spec: CommonSpec) -> int:
        assert isinstance(spec, TrainJobSpec)
        return spec.workers


class PredictKind(_Kind):
    kind = "PredictJob"

    def data_paths(self, spec: CommonSpec) -> list[str]:
        assert isinstance(spec, PredictJobSpec)
        return [spec.input.path, spec.output.path, spec.model]


_ALL: tuple[JobKind, ...] = (RenderKind(), TrainKind(), PredictKind())
JOB_KINDS: dict[str, JobKind] = {k.kind: k for k in _ALL}
assert set(JOB_KINDS) == set(KINDS), "every kind of the contract plugs into the reconciler"
__all__ = ["API", "JOB_KINDS", "JobKind", "job_kind"]


def job_kind(kind: str) -> JobKind:
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown kind {kind!r}; expected one of {', '.join(JOB_KINDS)}") from None

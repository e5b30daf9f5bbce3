"""RenderJob: numeric sequences to line-chart images in HDF5; `shards` pods share the input."""

from __future__ import annotations

from dataclasses import dataclass

from gpubatch_jobs.contract import KindInfo
from gpubatch_jobs.kinds import KindPlugin
from gpubatch_jobs.spec.kinds import RenderJob, RenderJobSpec


@dataclass(frozen=True)
class RenderShards:
    """spec.shards pods of one Indexed Job, each rendering its slice into its own file."""

    field: str = "shards"

    def count(self, spec: RenderJobSpec) -> int:
        return spec.shards


PLUGIN = KindPlugin(
    info=KindInfo("RenderJob", "renderjobs", "renderjob", "rj", "render"),
    spec=RenderJobSpec,
    resource=RenderJob,
    engine="gpubatch_jobs.render",
    shards=RenderShards(),
)

"""gpubatch for notebooks and scripts: `from gpubatch import Client`.

    from gpubatch import Client

    job = Client(namespace="team-a").submit("render.yaml")   # or Client(local=True)
    summary = job.wait(timeout=3600)

The client lives in `gpubatch_jobs.client` (docstring there); this package
only gives it a short name. The API models are re-exported so a spec can be
built in Python and submitted as it is.
"""

from gpubatch_jobs.client import Client, ClusterJob, GpubatchClientError, LocalJob
from gpubatch_jobs.spec import SpecError
from gpubatch_jobs.spec.kinds import PredictJob, RenderJob, TrainJob

__all__ = ["Client", "ClusterJob", "GpubatchClientError", "LocalJob", "PredictJob", "RenderJob", "SpecError",
           "TrainJob"]

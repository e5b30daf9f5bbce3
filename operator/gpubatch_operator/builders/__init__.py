"""Pure builders: a validated spec and a few decisions in, Kubernetes objects (dicts) out.

Nothing here calls the API; the tests assert on the returned dicts.
"""

from gpubatch_operator.builders.event import build_event
from gpubatch_operator.builders.job import (
           JobRequest,
           build_job,
           build_worker_network_policy,
           build_worker_service,
)
from gpubatch_operator.builders.rbac import job_rbac_objects

__all__ = ["JobRequest", "build_event", "build_job", "build_worker_network_policy", "build_worker_service",
           "job_rbac_objects"]

"""The job pods' identity in each namespace: ServiceAccount, Role and RoleBinding, kept present.

The operator creates the three objects (builders/rbac.py) before the first
Job it launches in a namespace, and remembers that it did, so a burst of
resources costs three requests per namespace, not per resource. The memory
is not for ever: the operator watches the ServiceAccounts it made
(label-filtered), and when one is deleted `lost()` drops the namespace, so
the next reconcile of any resource there creates them again. Without that,
a deleted `gpubatch-job` ServiceAccount would leave every later Job unable
to make pods.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gpubatch_operator.builders import job_rbac_objects
from gpubatch_operator.client import ApiError, KubeClient, namespaced

RBAC_PATHS = {
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
}


@dataclass
class JobRbac:
    client: KubeClient
    service_account: str
    annotations: dict[str, str] = field(default_factory=dict)
    _ready: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def lost(self, namespace: str) -> None:
        """One of the objects was deleted: create them again at the next `ensure`."""
        ready = self._ready.get(namespace)
        if ready is not None and ready.done():
            del self._ready[namespace]

    def known(self, namespace: str) -> bool:
        return namespace in self._ready

    async def ensure(self, namespace: str) -> None:
        """Create what is missing, once per namespace until `lost`; concurrent callers share one attempt."""
        ready = self._ready.get(namespace)
        if ready is None:
            ready = self._ready[namespace] = asyncio.get_running_loop().create_future()
            try:
                for obj in job_rbac_objects(namespace, self.service_account, self.annotations):
                    group_version, plural = RBAC_PATHS[obj["kind"]]
                    try:
                        await self.client.create(namespaced(group_version, plural, namespace), obj)
                    except ApiError as err:
                        if not err.already_exists:
                            raise
                ready.set_result(None)
            except BaseException as err:
                del self._ready[namespace]
                ready.set_exception(err)
                ready.exception()  # consumed: the waiters below get it re-raised
                raise
        await asyncio.shield(ready)

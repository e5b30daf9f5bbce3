"""The job pods' identity in each namespace: ServiceAccount, Role and RoleBinding, kept present.

The operator creates the three objects (builders/rbac.py) before the first
Job it launches in a namespace, and remembers that it did, so a burst of
resources costs three requests per namespace, not per resource. The memory
is not for ever: the operator watches the ServiceAccounts it made
(label-filtered), and when one is deleted `lost()` drops the namespace, so
the next reconcile of any resource there creates them again. Without that,
a deleted `gpubatch-job` ServiceAccount would leave every later Job unable
to make pods.

A second identity, the Spark driver's (`gpubatch-spark-driver`, rules
SPARK_DRIVER_RULES: it makes executor pods), is made the same way, only in
namespaces where a PredictJob with Kubernetes executors runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gpubatch_operator.builders import job_rbac_objects
from gpubatch_operator.builders.rbac import SPARK_DRIVER_RULES
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
    spark_driver_service_account: str = "gpubatch-spark-driver"
    annotations: dict[str, str] = field(default_factory=dict)  # on the job ServiceAccount (workload identity)
    _ready: dict[tuple[str, bool], asyncio.Future[None]] = field(default_factory=dict)

    def lost(self, namespace: str) -> None:
        """One of the objects was deleted: create them again at the next `ensure`."""
        for key in ((namespace, False), (namespace, True)):
            ready = self._ready.get(key)
            if ready is not None and ready.done():
                del self._ready[key]

    def known(self, namespace: str, spark_driver: bool = False) -> bool:
        return (namespace, False) in self._ready and (not spark_driver or (namespace, True) in self._ready)

    async def ensure(self, namespace: str, spark_driver: bool = False) -> None:
        """Create what is missing, once per namespace until `lost`; concurrent callers share one attempt."""
        await self._ensure(namespace, False)
        if spark_driver:
            await self._ensure(namespace, True)

    async def _ensure(self, namespace: str, spark_driver: bool) -> None:
        key = (namespace, spark_driver)
        ready = self._ready.get(key)
        if ready is None:
            ready = self._ready[key] = asyncio.get_running_loop().create_future()
            objects = (job_rbac_objects(namespace, self.spark_driver_service_account, SPARK_DRIVER_RULES)
                       if spark_driver else job_rbac_objects(namespace, self.service_account,
                                                             annotations=self.annotations))
            try:
                for obj in objects:
                    group_version, plural = RBAC_PATHS[obj["kind"]]
                    try:
                        await self.client.create(namespaced(group_version, plural, namespace), obj)
                    except ApiError as err:
                        if not err.already_exists:
                            raise
                ready.set_result(None)
            except BaseException as err:
                del self._ready[key]
                ready.set_exception(err)
                ready.exception()  # consumed: the waiters below get it re-raised
                raise
        await asyncio.shield(ready)

"""The job pods' identities in each namespace: ServiceAccount and RoleBinding, kept present, then removed.

The operator creates the two objects (builders/rbac.py) before the first Job it
launches in a namespace, and remembers that it did, so a burst of resources
costs a few requests per namespace, not per resource. The memory is not for
ever: the operator watches the ServiceAccounts it made (label-filtered), and
when one is deleted `lost()` drops the namespace, so the next reconcile of any
resource there creates them again.

The RoleBinding grants a ClusterRole the chart ships (the job identity's, or
the Spark driver's, made only in namespaces where a PredictJob with executor
pods runs); the operator holds `bind` on exactly those two, never their rules.
When the last gpubatch resource of a namespace is gone, `release()` deletes
both identities there; on `helm uninstall` the garbage collector does (owner
reference to the ClusterRole): nothing the operator granted stays behind.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from gpubatch_operator.builders import job_rbac_objects
from gpubatch_operator.builders.rbac import RBAC_API, cluster_role_owner
from gpubatch_operator.client import ApiError, KubeClient, cluster_path, namespaced

log = logging.getLogger("gpubatch.operator")

RBAC_PATHS = {
    "ServiceAccount": ("v1", "serviceaccounts"),
    "RoleBinding": (RBAC_API, "rolebindings"),
}


@dataclass
class JobRbac:
    client: KubeClient
    service_account: str
    spark_driver_service_account: str = "gpubatch-spark-driver"
    annotations: dict[str, str] = field(default_factory=dict)  # on the job ServiceAccount (workload identity)
    job_cluster_role: str = "gpubatch-job"
    spark_driver_cluster_role: str = "gpubatch-spark-driver"
    _ready: dict[tuple[str, bool], asyncio.Future[None]] = field(default_factory=dict)
    _owners: dict[str, dict[str, Any] | None] = field(default_factory=dict)

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

    async def release(self, namespace: str) -> None:
        """No gpubatch resource is left in `namespace`: delete both identities there (404s are fine)."""
        for key in ((namespace, False), (namespace, True)):
            self._ready.pop(key, None)
        for name in (self.service_account, self.spark_driver_service_account):
            for kind in ("RoleBinding", "ServiceAccount"):
                group_version, plural = RBAC_PATHS[kind]
                try:
                    await self.client.delete(namespaced(group_version, plural, namespace, name))
                except ApiError as err:
                    if not err.not_found:
                        raise
        log.info("no gpubatch resource left in %s: removed the job identities there", namespace)

    async def _owner(self, cluster_role: str) -> dict[str, Any] | None:
        """An owner reference to the chart's ClusterRole; None where it does not exist (no chart)."""
        if cluster_role not in self._owners:
            try:
                body = await self.client.get(cluster_path(RBAC_API, "clusterroles") + f"/{cluster_role}")
                self._owners[cluster_role] = cluster_role_owner(body)
            except ApiError as err:
                if not err.not_found:
                    raise
                log.warning("the ClusterRole %s does not exist (is the chart installed?): job pods in the "
                            "namespaces bound to it get none of its rights", cluster_role)
                self._owners[cluster_role] = None
        return self._owners[cluster_role]

    async def _ensure(self, namespace: str, spark_driver: bool) -> None:
        key = (namespace, spark_driver)
        ready = self._ready.get(key)
        if ready is None:
            ready = self._ready[key] = asyncio.get_running_loop().create_future()
            try:
                if spark_driver:
                    role = self.spark_driver_cluster_role
                    objects = job_rbac_objects(namespace, self.spark_driver_service_account, role,
                                               owner=await self._owner(role))
                else:
                    role = self.job_cluster_role
                    objects = job_rbac_objects(namespace, self.service_account, role,
                                               annotations=self.annotations, owner=await self._owner(role))
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

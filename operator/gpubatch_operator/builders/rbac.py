"""The job pods' identities in one namespace: a ServiceAccount and a RoleBinding to a ClusterRole.

The chart ships two ClusterRoles (charts/gpubatch/templates/job-rbac.yaml) whose
rules are below: the job identity's (a pod patches the `gpubatch.dev/progress`
annotation on itself; the chart's ValidatingAdmissionPolicy holds it to its own
pod and that annotation) and the Spark driver's (it makes, watches and deletes
executor pods and their ConfigMap; a second policy holds its pod creation to
executor pods owned by it). The operator creates the ServiceAccount and a
RoleBinding to the ClusterRole in each namespace where it launches a Job: it
holds `bind` on exactly those two ClusterRoles, so it grants their rules
without holding them itself (RBAC's standard way to delegate).

Both objects carry `gpubatch.dev/job-identity: "true"` (the operator watches
the ServiceAccounts to re-create a deleted one) and, when the ClusterRole is
known, an owner reference to it: `helm uninstall` deletes the ClusterRole and
the garbage collector then deletes every binding and ServiceAccount the
operator made, in every namespace.
"""

from __future__ import annotations

from typing import Any

from gpubatch_jobs.contract import JOB_IDENTITY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL

RBAC_API = "rbac.authorization.k8s.io/v1"

# The job identity: patch (a merge-patch of the progress annotation on its own pod: the
# chart's ValidatingAdmissionPolicy refuses anything else). No get, list or watch.
JOB_POD_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
]

# A PredictJob whose Spark executors are pods (spark.executors, or the cluster's own API server
# as spark.master): its pod is the Spark driver and runs as a ServiceAccount of its own, bound
# only in namespaces where such a job runs. Spark (client mode) gets its own pod (the executors'
# owner), creates, watches, lists and deletes executor pods (the chart's policy admits only pods
# owned by the driver, on an allowed image, without a token, host paths or another identity), and
# keeps the executors' configuration in a ConfigMap; the pod also patches its progress.
SPARK_DRIVER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "delete"]},
]


def cluster_role_owner(cluster_role: dict[str, Any]) -> dict[str, Any]:
    """An owner reference to a ClusterRole (no blockOwnerDeletion: nothing waits on it)."""
    meta = cluster_role.get("metadata", {})
    return {"apiVersion": RBAC_API, "kind": "ClusterRole", "name": meta.get("name", ""), "uid": meta.get("uid", "")}


def job_rbac_objects(namespace: str, service_account: str, cluster_role: str = "gpubatch-job",
                     annotations: dict[str, str] | None = None,
                     owner: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """[ServiceAccount, RoleBinding], both named `service_account`; the binding grants the ClusterRole
    `cluster_role` in `namespace` only; `annotations` on the ServiceAccount (workload identity for s3://
    paths, e.g. eks.amazonaws.com/role-arn); `owner`: an owner reference (to that ClusterRole)."""
    meta: dict[str, Any] = {
        "name": service_account,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, NAME_LABEL: "gpubatch", JOB_IDENTITY_LABEL: "true"},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**meta, "annotations": dict(annotations)} if annotations else meta},
        {
            "apiVersion": RBAC_API,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]

"""The job pods' ServiceAccount, Role and RoleBinding for one namespace.

A job pod reports progress by merge-patching the `gpubatch.dev/progress`
annotation on its own Pod, so its ServiceAccount may `get` and `patch` pods in
its namespace and nothing else. The operator creates these three objects in
each namespace where it launches a Job (the chart pre-creates them where it
can); existing ones are left as they are. All carry `gpubatch.dev/job-identity:
"true"`, by which the operator watches the ServiceAccounts to re-create a deleted one.
"""

from __future__ import annotations

from typing import Any

from gpubatch_jobs.contract import JOB_IDENTITY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL

JOB_POD_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
]

# A PredictJob whose Spark executors are pods (spark.master k8s://..., or spark.executors
# alone): its pod is the Spark driver and runs as a ServiceAccount of its own, made only in
# namespaces where such a job runs. Spark (client mode) gets its own pod (the executors'
# owner), creates, watches, lists and deletes executor pods, and keeps the executors'
# configuration in a ConfigMap it creates and deletes; the pod also patches its progress.
SPARK_DRIVER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "delete"]},
]


def needs_spark_driver(spec: Any) -> bool:
    """The job pod is a Spark driver that makes executor pods."""
    spark = getattr(spec, "spark", None)
    return getattr(spec, "engine", None) == "spark" and spark is not None and bool(spark.on_kubernetes)


def job_rbac_objects(namespace: str, service_account: str, rules: list[dict[str, Any]] | None = None,
                     annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """[ServiceAccount, Role, RoleBinding], all named `service_account`; `rules` default JOB_POD_RULES;
    `annotations` on the ServiceAccount (workload identity for s3:// paths, e.g. eks.amazonaws.com/role-arn)."""
    meta = {
        "name": service_account,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, NAME_LABEL: "gpubatch", JOB_IDENTITY_LABEL: "true"},
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**meta, "annotations": dict(annotations)} if annotations else meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": JOB_POD_RULES if rules is None else rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": service_account},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]

"""Exactly the API access the operator uses, for the Helm chart's (Cluster)Role.

Each entry is (apiGroup, resource, verbs); the named entries add the names the
rule is limited to (resourceNames), which depend on the settings. Keep it in
step with the code: a unit test checks that every request path the operator
builds is covered, and tests/unit/test_chart_rbac.py that the chart says the same.

- the three kinds: watched (kopf lists and watches them); status written
  through the status subresource only (the spec is never written); the
  finalizers subresource because Jobs carry blockOwnerDeletion owner references.
- Jobs: created, watched (label-filtered), deleted on a GPU->CPU fallback.
- Pods: watched (label-filtered) for scheduling trouble, exit codes,
  termination messages and the progress annotation. Read only: the operator
  never makes, patches or deletes a pod.
- Nodes: watched to know whether any node offers allocatable GPUs (cluster-wide).
- Services and NetworkPolicies: the headless Service of a TrainJob with
  workers > 1 (stable DNS names for its worker pods) and the policy that lets
  only the group's pods reach them, created once, owned by the TrainJob.
- Events: posted on each transition of a resource.
- ServiceAccounts and RoleBindings: the job pods' identities, created in each
  namespace where a Job is launched, bound to the chart's two ClusterRoles (the
  job identity's, the Spark driver's). The operator holds `bind` on exactly
  those two names, never their rules, and no Roles at all; it deletes the two
  ServiceAccounts and RoleBindings (by name) when a namespace's last resource
  is gone, and reads the two ClusterRoles (by name) for their UIDs, so that
  what it binds is owned by them and goes with `helm uninstall`.
- CustomResourceDefinitions and Namespaces: kopf's discovery of the watched
  resources (list/watch).
"""

from __future__ import annotations

from gpubatch_jobs.contract import API_GROUP
from gpubatch_jobs.kinds import plurals
from gpubatch_operator.settings import Settings

_PLURALS = plurals()  # the kinds' plug-ins (gpubatch_jobs/kinds/)

OPERATOR_RBAC: list[tuple[str, str, tuple[str, ...]]] = [
    *((API_GROUP, plural, ("get", "list", "watch")) for plural in _PLURALS),
    *((API_GROUP, f"{plural}/status", ("get", "patch", "update")) for plural in _PLURALS),
    *((API_GROUP, f"{plural}/finalizers", ("update",)) for plural in _PLURALS),
    ("batch", "jobs", ("get", "list", "watch", "create", "delete")),
    ("", "pods", ("get", "list", "watch")),
    ("", "events", ("create",)),
    ("", "services", ("get", "create")),
    ("networking.k8s.io", "networkpolicies", ("get", "create")),
    ("", "serviceaccounts", ("get", "list", "watch", "create")),
    ("rbac.authorization.k8s.io", "rolebindings", ("get", "create")),
    # Read only: why Kueue has not admitted a suspended Job (queue_reason.py), for status.message.
    ("kueue.x-k8s.io", "workloads", ("get", "list")),
]

NamedEntry = tuple[str, str, tuple[str, ...], tuple[str, ...]]


def operator_named_rbac(settings: Settings) -> list[NamedEntry]:
    """Namespaced rules limited to names: the job identities' removal, and `bind` on their ClusterRoles."""
    accounts = (settings.job_service_account, settings.spark_driver_service_account)
    roles = (settings.job_cluster_role, settings.spark_driver_cluster_role)
    return [
        ("", "serviceaccounts", ("delete",), accounts),
        ("rbac.authorization.k8s.io", "rolebindings", ("delete",), accounts),
        ("rbac.authorization.k8s.io", "clusterroles", ("bind",), roles),
    ]


def operator_cluster_named_rbac(settings: Settings) -> list[NamedEntry]:
    """Cluster-scoped rules limited to names: the job ClusterRoles read for their UIDs."""
    return [("rbac.authorization.k8s.io", "clusterroles", ("get",),
             (settings.job_cluster_role, settings.spark_driver_cluster_role))]

# Cluster-scoped: granted by a ClusterRole even when watching listed namespaces.
OPERATOR_CLUSTER_RBAC: list[tuple[str, str, tuple[str, ...]]] = [
    ("", "nodes", ("get", "list", "watch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch")),
    ("", "namespaces", ("get", "list", "watch")),
]


# Leader election (GPUBATCH_LEADER_ELECTION): a Role in the operator's own namespace.
OPERATOR_LEASE_RBAC: list[tuple[str, str, tuple[str, ...]]] = [
    ("coordination.k8s.io", "leases", ("get", "create", "update")),
]


def as_rules(entries: list[tuple[str, str, tuple[str, ...]]]) -> list[dict[str, list[str]]]:
    """The entries as Kubernetes PolicyRules."""
    return [{"apiGroups": [g], "resources": [r], "verbs": list(v)} for g, r, v in entries]


def as_named_rules(entries: list[NamedEntry]) -> list[dict[str, list[str]]]:
    """The named entries as Kubernetes PolicyRules with resourceNames."""
    return [{"apiGroups": [g], "resources": [r], "verbs": list(v), "resourceNames": list(n)} for g, r, v, n in entries]

"""Exactly the API access the operator uses, for the Helm chart's (Cluster)Role.

Each entry is (apiGroup, resource, verbs). Keep it in step with the code: a
unit test checks that every request path the operator builds is covered.

- the three kinds: watched (kopf lists and watches them); status written
  through the status subresource only (the spec is never written); the
  finalizers subresource because Jobs carry blockOwnerDeletion owner references.
- Jobs: created, watched (label-filtered), deleted on a GPU->CPU fallback.
- Pods: watched (label-filtered) for scheduling trouble, exit codes,
  termination messages and the progress annotation.
- Nodes: watched to know whether any node offers allocatable GPUs (cluster-wide).
- Services: the headless Service of a TrainJob with workers > 1 (stable DNS
  names for its worker pods), created once, owned by the TrainJob.
- Events: posted on each transition of a resource.
- ServiceAccounts, Roles, RoleBindings: the job pods' `gpubatch-job` identity,
  created in each namespace where a Job is launched (Role: pods get/patch, so
  the operator must itself hold get/patch on pods to grant it); its
  ServiceAccounts are watched (label-filtered) so a deleted one is re-created.
  Likewise the Spark driver's `gpubatch-spark-driver` identity where a
  PredictJob has executor pods (pods create/delete, configmaps): the operator
  holds those rights only to grant them; it never makes a pod or ConfigMap.
- CustomResourceDefinitions and Namespaces: kopf's discovery of the watched
  resources (list/watch).
"""

from __future__ import annotations

from gpubatch_jobs.contract import API_GROUP, KINDS

_PLURALS = [info.plural for info in KINDS.values()]  # the contract's kinds table

OPERATOR_RBAC: list[tuple[str, str, tuple[str, ...]]] = [
    *((API_GROUP, plural, ("get", "list", "watch")) for plural in _PLURALS),
    *((API_GROUP, f"{plural}/status", ("get", "patch", "update")) for plural in _PLURALS),
    *((API_GROUP, f"{plural}/finalizers", ("update",)) for plural in _PLURALS),
    ("batch", "jobs", ("get", "list", "watch", "create", "delete")),
    # create/delete and configmaps only to grant them to the Spark driver identity.
    ("", "pods", ("get", "list", "watch", "patch", "create", "delete")),
    ("", "configmaps", ("get", "list", "create", "delete")),
    ("", "events", ("create",)),
    ("", "services", ("get", "create")),
    ("", "serviceaccounts", ("get", "list", "watch", "create")),
    ("rbac.authorization.k8s.io", "roles", ("get", "create")),
    ("rbac.authorization.k8s.io", "rolebindings", ("get", "create")),
    # Read only: why Kueue has not admitted a suspended Job (queue_reason.py), for status.message.
    ("kueue.x-k8s.io", "workloads", ("get", "list")),
]

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

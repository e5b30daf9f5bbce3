{{/*
The operator's RBAC rules, in one place. They mirror gpubatch_operator.rbac
(OPERATOR_RBAC, OPERATOR_CLUSTER_RBAC) and the job pods' rules mirror
gpubatch_operator.builders.rbac.JOB_POD_RULES: tests/unit/test_chart_rbac.py
fails when the chart and the operator differ. No rule uses a wildcard.
*/}}

{{/* Rules on namespaced resources: a Role per watched namespace, or part of the ClusterRole. */}}
{{- define "gpubatch.rules.namespaced" -}}
# The three kinds: listed and watched (the spec is never written).
- apiGroups: ["gpubatch.dev"]
  resources: ["trainjobs", "predictjobs", "renderjobs"]
  verbs: ["get", "list", "watch"]
# status: phase, progress, result and conditions.
- apiGroups: ["gpubatch.dev"]
  resources: ["trainjobs/status", "predictjobs/status", "renderjobs/status"]
  verbs: ["get", "patch", "update"]
# A Job's owner reference to its resource sets blockOwnerDeletion, which the
# API server allows only to whoever may update the owner's finalizers.
- apiGroups: ["gpubatch.dev"]
  resources: ["trainjobs/finalizers", "predictjobs/finalizers", "renderjobs/finalizers"]
  verbs: ["update"]
# The Jobs it launches; delete replaces an unschedulable GPU Job by a CPU one.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Job pods: watched for scheduling trouble, exit codes and progress. patch is
# held only so the operator may grant get/patch to the job ServiceAccount, and
# create/delete (and the configmaps rule) only to grant them to the Spark
# driver's ServiceAccount, which makes executor pods (RBAC lets nobody grant
# what it does not hold). The operator itself never makes a pod or ConfigMap.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "delete"]
# An Event on each transition of a resource.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The headless Service of a TrainJob with workers > 1 (its workers' DNS names).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
# The job pods' ServiceAccount, Role and RoleBinding, created where missing;
# the ServiceAccounts watched (label gpubatch.dev/job-identity) to re-create a deleted one.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
# Read only: the Kueue Workload of a suspended Job, to say in status.message why it waits.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list"]
{{- end }}

{{/* Rules on cluster-scoped resources: always a ClusterRole, even when watching listed namespaces. */}}
{{- define "gpubatch.rules.clusterScoped" -}}
# The auto policy: does any node offer an allocatable GPU?
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
# kopf's discovery of the resources it watches.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* The job pods' Role: a pod patches the progress annotation on itself. */}}
{{- define "gpubatch.rules.job" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "patch"]
{{- end }}

{{/* Leader election: the operator replicas' Lease (gpubatch_operator.rbac.OPERATOR_LEASE_RBAC). */}}
{{- define "gpubatch.rules.leaderElection" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

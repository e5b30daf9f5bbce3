{{/*
The operator's RBAC rules, in one place. They mirror gpubatch_operator.rbac
(OPERATOR_RBAC, OPERATOR_NAMED_RBAC, OPERATOR_CLUSTER_RBAC, OPERATOR_CLUSTER_NAMED_RBAC),
and the job identities' ClusterRoles mirror gpubatch_operator.builders.rbac
(JOB_POD_RULES, SPARK_DRIVER_RULES): tests/unit/test_chart_rbac.py fails when
the chart and the operator differ. No rule uses a wildcard. The operator holds
no pods create/delete/patch and no roles at all: it grants the job identities
their rights by binding the two ClusterRoles below (`bind` on those names only).
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
# Job pods: watched for scheduling trouble, exit codes and progress. Read only.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# An Event on each transition of a resource.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The headless Service and the NetworkPolicy of a TrainJob with workers > 1.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create"]
# The job identities: ServiceAccount and RoleBinding, created where missing; the
# ServiceAccounts watched (label gpubatch.dev/job-identity) to re-create a deleted one.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["get", "create"]
# ... removed again, by name only, when a namespace's last gpubatch resource is gone.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["delete"]
  resourceNames: [{{ .Values.jobServiceAccount.name | quote }}, {{ include "gpubatch.sparkDriverServiceAccount" . | quote }}]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["delete"]
  resourceNames: [{{ .Values.jobServiceAccount.name | quote }}, {{ include "gpubatch.sparkDriverServiceAccount" . | quote }}]
# Binding the chart's two job ClusterRoles grants their rules without holding them.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  verbs: ["bind"]
  resourceNames: [{{ include "gpubatch.jobClusterRole" . | quote }}, {{ include "gpubatch.sparkDriverClusterRole" . | quote }}]
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
# The job ClusterRoles' UIDs: what the operator binds is owned by them (gone on uninstall).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  verbs: ["get"]
  resourceNames: [{{ include "gpubatch.jobClusterRole" . | quote }}, {{ include "gpubatch.sparkDriverClusterRole" . | quote }}]
{{- end }}

{{/* The job identity: a pod patches the progress annotation on itself (the admission policy holds it there). */}}
{{- define "gpubatch.rules.job" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch"]
{{- end }}

{{/* The Spark driver identity: executor pods (the admission policy holds them to pods it owns) and their ConfigMap. */}}
{{- define "gpubatch.rules.sparkDriver" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "delete"]
{{- end }}

{{/* Leader election: the operator replicas' Lease (gpubatch_operator.rbac.OPERATOR_LEASE_RBAC). */}}
{{- define "gpubatch.rules.leaderElection" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

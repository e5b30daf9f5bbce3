{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "gpubatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name "<release>-<chart>", or fullnameOverride; just the release name
when it already contains the chart name. Truncated to 63 characters (DNS label).
*/}}
{{- define "gpubatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "gpubatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource of the release carries. */}}
{{- define "gpubatch.commonLabels" -}}
helm.sh/chart: {{ include "gpubatch.chart" . }}
app.kubernetes.io/name: {{ include "gpubatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpubatch
{{- end }}

{{/* Labels of the operator's resources. */}}
{{- define "gpubatch.labels" -}}
{{ include "gpubatch.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of the job pods' ServiceAccount, Role and RoleBinding. */}}
{{- define "gpubatch.jobLabels" -}}
{{ include "gpubatch.commonLabels" . }}
app.kubernetes.io/component: job
{{- /* gpubatch_jobs.contract.JOB_IDENTITY_LABEL: the operator re-creates a deleted one. */}}
gpubatch.dev/job-identity: "true"
{{- end }}

{{/* Labels that select the operator pod (never change them: selectors are immutable). */}}
{{- define "gpubatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpubatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "gpubatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpubatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" with the tag defaulting to appVersion; arg: dict "image" . "root" $ */}}
{{- define "gpubatch.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* True (non-empty) when the operator watches only the listed namespaces. */}}
{{- define "gpubatch.namespaced" -}}
{{- if .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{/*
Namespaces the job ServiceAccount is pre-created in, as a JSON list: the
watched namespaces (or the release namespace when watching all) plus
jobServiceAccount.namespaces, without duplicates.
*/}}
{{- define "gpubatch.jobNamespaces" -}}
{{- $base := .Values.watchNamespaces | default (list .Release.Namespace) }}
{{- concat $base .Values.jobServiceAccount.namespaces | uniq | toJson }}
{{- end }}

{{/* The ClusterRoles the job pods' identities are bound to (the operator holds `bind` on these two only). */}}
{{- define "gpubatch.jobClusterRole" -}}
{{- printf "%s-job" (include "gpubatch.fullname" .) | trunc 253 }}
{{- end }}
{{- define "gpubatch.sparkDriverClusterRole" -}}
{{- printf "%s-spark-driver" (include "gpubatch.fullname" .) | trunc 253 }}
{{- end }}
{{/* The Spark driver's ServiceAccount (gpubatch_operator.settings default). */}}
{{- define "gpubatch.sparkDriverServiceAccount" -}}
gpubatch-spark-driver
{{- end }}

{{/* The images a spec.image may name, as a JSON list: jobImages.allowed, else the two job repositories. */}}
{{- define "gpubatch.allowedImages" -}}
{{- .Values.jobImages.allowed | default (list .Values.jobImages.gpu.repository .Values.jobImages.cpu.repository) | uniq | toJson }}
{{- end }}

{{/* A CEL expression, true when the string `i` is an allowed image (gpubatch_operator.policy.image_allowed). */}}
{{- define "gpubatch.imageAllowedCel" -}}
{{- $tests := list }}
{{- range $entry := include "gpubatch.allowedImages" . | fromJsonArray }}
{{- if hasSuffix "/*" $entry }}
{{- $tests = append $tests (printf "(i.startsWith('%s') && i.size() > %d)" (trimSuffix "*" $entry) (len (trimSuffix "*" $entry))) }}
{{- else }}
{{- $tests = append $tests (printf "i == '%s' || i.startsWith('%s:') || i.startsWith('%s@')" $entry $entry $entry) }}
{{- end }}
{{- end }}
{{- join " || " $tests }}
{{- end }}

{{/*
The operator's settings (gpubatch_operator.settings reads them once at startup).
*/}}
{{- define "gpubatch.operatorEnv" -}}
- name: GPUBATCH_WATCH_NAMESPACES
  value: {{ join "," .Values.watchNamespaces | quote }}
- name: GPUBATCH_GPU_IMAGE
  value: {{ include "gpubatch.imageRef" (dict "image" .Values.jobImages.gpu "root" .) | quote }}
- name: GPUBATCH_CPU_IMAGE
  value: {{ include "gpubatch.imageRef" (dict "image" .Values.jobImages.cpu "root" .) | quote }}
- name: GPUBATCH_ALLOWED_IMAGES
  value: {{ include "gpubatch.allowedImages" . | fromJsonArray | join "," | quote }}
- name: GPUBATCH_ALLOW_TOLERATE_ALL
  value: {{ .Values.jobTolerations.allowTolerateAll | quote }}
- name: GPUBATCH_JOB_CLUSTER_ROLE
  value: {{ include "gpubatch.jobClusterRole" . | quote }}
- name: GPUBATCH_SPARK_DRIVER_CLUSTER_ROLE
  value: {{ include "gpubatch.sparkDriverClusterRole" . | quote }}
- name: GPUBATCH_SPARK_DRIVER_SERVICE_ACCOUNT
  value: {{ include "gpubatch.sparkDriverServiceAccount" . | quote }}
- name: GPUBATCH_IMAGE_PULL_POLICY
  value: {{ .Values.jobImages.pullPolicy | quote }}
- name: GPUBATCH_DEFAULT_DEVICE_POLICY
  value: {{ .Values.defaults.devicePolicy | quote }}
- name: GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT
  value: {{ .Values.defaults.gpuPendingTimeout | quote }}
- name: GPUBATCH_DEFAULT_TERMINATION_GRACE_SECONDS
  value: {{ .Values.defaults.terminationGracePeriodSeconds | quote }}
- name: GPUBATCH_JOB_SERVICE_ACCOUNT
  value: {{ .Values.jobServiceAccount.name | quote }}
- name: GPUBATCH_JOB_SERVICE_ACCOUNT_ANNOTATIONS
  value: {{ .Values.jobServiceAccount.annotations | default dict | toJson | quote }}
- name: GPUBATCH_GPU_RESOURCE
  value: {{ .Values.gpuResource | quote }}
- name: GPUBATCH_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
- name: GPUBATCH_HEALTH_PORT
  value: {{ .Values.health.port | quote }}
- name: GPUBATCH_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: GPUBATCH_LEADER_ELECTION
  value: {{ .Values.leaderElection.enabled | quote }}
- name: GPUBATCH_LEADER_ELECTION_LEASE
  value: {{ include "gpubatch.fullname" . | quote }}
- name: GPUBATCH_LEASE_SECONDS
  value: {{ .Values.leaderElection.leaseSeconds | quote }}
{{- end }}

"""The batch/v1 Job for one attempt of a gpubatch resource, on the GPU or the CPU image.

`build_job(JobRequest(...), settings)` is pure: the tests build requests with
the fluent helper in tests/unit and assert on the dict. The Job ends at once
on the contract's fail-at-once exit codes (gpubatch_jobs/contract.py: 1 bad
input, retrying cannot help; 75 GPU unusable, the operator decides whether to
re-run on the CPU); other failures, unexpected errors (2) included, are
retried up to spec.backoffLimit, and pod disruptions (eviction, preemption)
are not counted against it.

The pod is told the device (gpu|cpu) and to exit 75 if the GPU fails: the
CPU re-run then gets the CPU image and gives the GPU back. The spec travels
as the user wrote it; its device.policy is not the pod's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpubatch_jobs.contract import (
    API,
    ENV_POD_IP,
    ENV_WORKER_HOSTS,
    FAIL_AT_ONCE,
    TERMINATION_LOG,
    WORKER_PORT,
    DeviceInstruction,
)
from gpubatch_jobs.kinds import KindPlugin
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_operator.builders.pod import (
    CONTAINER_NAME,
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    SCRATCH_MOUNT,
    SCRATCH_VOLUME,
    container_env,
    pvc_volumes,
    resources,
    storage_env,
    storage_volumes,
    tolerations,
)
from gpubatch_operator.naming import (
    ATTEMPT_LABEL,
    DEVICE_LABEL,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    OWNER_UID_LABEL,
    TEST_ANNOTATION_PREFIX,
    owner_labels,
    worker_hosts,
    workers_service_name,
)
from gpubatch_operator.settings import Settings

FAIL_AT_ONCE_EXIT_CODES = sorted(FAIL_AT_ONCE)


@dataclass(frozen=True)
class JobRequest:
    """Everything that decides the Job: the resource, its spec and this attempt's device."""

    plugin: KindPlugin  # the kind's plug-in (gpubatch_jobs/kinds/); `kind` elsewhere is its name
    name: str
    namespace: str
    uid: str
    spec: CommonSpec
    job_name: str
    device: str  # gpu | cpu, decided by decide()
    attempt: int = 1
    test_hooks: dict[str, str] = field(default_factory=dict)  # the resource's gpubatch.dev/test-* annotations

    @property
    def instruction(self) -> DeviceInstruction:
        """What the pod is told: this device; on a GPU failure exit 75 and let the operator decide."""
        return DeviceInstruction(self.device, "exit")


def test_annotations(annotations: dict[str, str], device: str) -> dict[str, str]:
    """The test hook: `gpubatch.dev/test-X` goes to every pod, `gpubatch.dev/test-gpu-X`
    (or `-cpu-X`) only to that device's pods, renamed `gpubatch.dev/test-X`."""
    hooks: dict[str, str] = {}
    scoped: dict[str, str] = {}
    for key, value in annotations.items():
        if not key.startswith(TEST_ANNOTATION_PREFIX):
            continue
        rest = key[len(TEST_ANNOTATION_PREFIX):]
        for scope in ("gpu-", "cpu-"):
            if rest.startswith(scope):
                if scope == f"{device}-":
                    scoped[TEST_ANNOTATION_PREFIX + rest[len(scope):]] = value
                break
        else:
            hooks[key] = value
    return {**hooks, **scoped}


def image_for(request: JobRequest, settings: Settings) -> tuple[str, str]:
    override = request.spec.image
    if request.device == "gpu":
        image = (override.gpu if override else None) or settings.gpu_image
    else:
        image = (override.cpu if override else None) or settings.cpu_image
    pull = (override.pull_policy if override else None) or settings.image_pull_policy
    return image, pull


def worker_group(job_spec: dict[str, Any], container: dict[str, Any], pod_spec: dict[str, Any],
                 request: JobRequest, workers: int) -> None:
    """A TrainJob's worker group: N pods of an Indexed Job that start and fail together.

    completions = parallelism = N; each pod is `JOB-i` under the headless Service's
    subdomain and is told every worker's address and (by the Job controller) its
    index. The Job itself never retries a pod (backoffLimit 0, disruptions
    included): a replacement would join a group whose peers are gone, so any failed
    worker fails the Job, and the operator restarts the whole group as a new attempt
    (decide.py) up to spec.backoffLimit. With queueName, Kueue admits the suspended
    Indexed Job as one workload: all N pods or none.
    """
    service = workers_service_name(request.name)
    job_spec.update(completions=workers, parallelism=workers, completionMode="Indexed", backoffLimit=0)
    job_spec["podFailurePolicy"]["rules"] = [r for r in job_spec["podFailurePolicy"]["rules"]
                                             if r["action"] != "Ignore"]
    pod_spec["subdomain"] = service
    container["env"].append({"name": ENV_WORKER_HOSTS,
                             "value": worker_hosts(request.job_name, service, workers, WORKER_PORT)})
    container["ports"] = [{"name": "worker", "containerPort": WORKER_PORT, "protocol": "TCP"}]


def build_worker_service(request: JobRequest) -> dict[str, Any]:
    """The headless Service that gives a TrainJob's worker pods their DNS names (`JOB-i.SERVICE`).

    Owned by the TrainJob (deleted with it); it selects the resource's pods by
    owner UID, and publishes addresses before readiness, since a worker must find
    its peers while they start.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workers_service_name(request.name),
            "namespace": request.namespace,
            "labels": owner_labels(request.plugin.kind, request.name, request.uid),
            "ownerReferences": [owner_reference(request)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {OWNER_UID_LABEL: request.uid},
            "ports": [{"name": "worker", "port": WORKER_PORT, "targetPort": WORKER_PORT, "protocol": "TCP"}],
        },
    }


def build_worker_network_policy(request: JobRequest) -> dict[str, Any]:
    """The NetworkPolicy of a TrainJob's worker group: only the group's own pods reach its pods.

    It selects the resource's pods (owner-uid label, set by the operator on the Job's
    template; a tenant who may not create pods cannot wear it) and admits traffic to
    the worker port from those pods alone; any other ingress to them is refused where
    the cluster's network plugin enforces NetworkPolicy. Owned by the TrainJob.
    """
    selector = {"matchLabels": {OWNER_UID_LABEL: request.uid}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": workers_service_name(request.name),
            "namespace": request.namespace,
            "labels": owner_labels(request.plugin.kind, request.name, request.uid),
            "ownerReferences": [owner_reference(request)],
        },
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": selector}],
                         "ports": [{"protocol": "TCP", "port": WORKER_PORT}]}],
        },
    }


def build_job(request: JobRequest, settings: Settings) -> dict[str, Any]:
    spec = request.spec
    labels = {
        **owner_labels(request.plugin.kind, request.name, request.uid),
        DEVICE_LABEL: request.device,
        ATTEMPT_LABEL: str(request.attempt),
    }
    job_labels = dict(labels)
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    if spec.priority_class:
        job_labels[KUEUE_PRIORITY_LABEL] = spec.priority_class
    test_hooks = test_annotations(request.test_hooks, request.device) if settings.test_hooks else {}
    image, pull_policy = image_for(request, settings)
    paths = request.plugin.data_paths(spec)
    volumes, mounts = pvc_volumes(paths)
    key_volumes, key_mounts = storage_volumes(spec, paths)  # gs://: the Secret's service-account.json
    # The root filesystem is read-only: /tmp is the pod's scratch space.
    volumes, mounts = [SCRATCH_VOLUME, *volumes, *key_volumes], [SCRATCH_MOUNT, *mounts, *key_mounts]
    spark_driver = request.plugin.is_spark_driver(spec)
    env = container_env(spec.model_dump(by_alias=True, mode="json", exclude_unset=True), request.instruction, request.name)
    env += storage_env(spec, paths)  # spec.storage.secretName: its keys for the paths' schemes
    if spark_driver:
        # Spark executors reach the driver (this pod) by its IP: the cluster may have no DNS.
        env.append({"name": ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["gpubatch-job", request.plugin.command],
        # The spec as written (validated; defaults are the pod's own models' to fill in).
        "env": env,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePath": TERMINATION_LOG,
        # File only: the engine always writes its summary there, and a log tail (what
        # FallbackToLogsOnError would take) may quote data into status.message.
        "terminationMessagePolicy": "File",
    }
    if mounts:
        container["volumeMounts"] = mounts
    wanted = resources(spec, request.device, settings.gpu_resource)
    if wanted:
        container["resources"] = wanted
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # A Spark driver that makes executor pods runs as its own identity (builders/rbac.py).
        "serviceAccountName": settings.spark_driver_service_account if spark_driver else settings.job_service_account,
        # The token is there for one thing: patching this pod's progress annotation (and a
        # Spark driver's executor pods).
        "automountServiceAccountToken": True,
        "securityContext": POD_SECURITY_CONTEXT,
        "containers": [container],
        # After SIGTERM (Kueue preemption, eviction, deletion) the engine finishes the step, chunk
        # or image in flight and saves it (gpubatch_jobs.preempt) within this many seconds.
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds
        or settings.default_termination_grace_s,
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    tolerated = tolerations(spec, request.device, settings.gpu_resource)
    if tolerated:
        pod_spec["tolerations"] = tolerated
    template_meta: dict[str, Any] = {"labels": labels}
    if test_hooks:
        template_meta["annotations"] = test_hooks
    rules: list[dict[str, Any]] = [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": CONTAINER_NAME,
                "operator": "In",
                "values": FAIL_AT_ONCE_EXIT_CODES,
            },
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": {"rules": rules},
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    shards = request.plugin.shard_count(spec)
    if shards > 1:
        job_spec.update(completions=shards, parallelism=shards, completionMode="Indexed")
    workers = request.plugin.group_size(spec)
    if workers > 1:
        worker_group(job_spec, container, pod_spec, request, workers)
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    if spec.queue_name:
        # Kueue admits the Job by un-suspending it once the queue has quota.
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.job_name,
            "namespace": request.namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(request)],
        },
        "spec": job_spec,
    }


def owner_reference(request: JobRequest) -> dict[str, Any]:
    """The resource as the controlling owner of what is built for it (Job, workers' Service)."""
    return {"apiVersion": API, "kind": request.plugin.kind, "name": request.name, "uid": request.uid,
            "controller": True, "blockOwnerDeletion": True}

"""The job pod: container, environment, mounts and a security context that
passes PodSecurity `restricted`.

The pod runs `gpubatch-job KIND` with what the contract
(gpubatch_jobs/contract.py) says it gets: the validated spec as JSON in
GPUBATCH_SPEC and the device instruction (GPUBATCH_DEVICE gpu|cpu, decided by
the operator, and GPUBATCH_ON_GPU_FAILURE); the engine writes its summary to
/dev/termination-log (copied into status.result) and patches its own
`gpubatch.dev/progress` annotation (copied into status.progress).
"""

from __future__ import annotations

import json
from typing import Any

from gpubatch_jobs import contract
from gpubatch_jobs.contract import CONTAINER_NAME, POD_PVC_ROOT, DeviceInstruction
from gpubatch_jobs.runtime import split_pvc
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_operator.naming import volume_name

__all__ = ["CONTAINER_NAME", "container_env", "pvc_volumes", "resources", "storage_env", "tolerations"]
JOB_USER_ID = 1000

POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": JOB_USER_ID,
    "runAsGroup": JOB_USER_ID,
    "fsGroup": JOB_USER_ID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": JOB_USER_ID,
    "allowPrivilegeEscalation": False,
    # The images write only under /tmp (HOME, matplotlib's, numba's and Spark's
    # caches), an emptyDir; everything else is read-only.
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def claims(paths: list[str]) -> list[str]:
    """Claims named by pvc:// paths, in first-seen order, without duplicates."""
    found = (split_pvc(p) for p in paths)
    return list(dict.fromkeys(pvc[0] for pvc in found if pvc is not None))


SCRATCH_VOLUME = {"name": "tmp", "emptyDir": {}}
SCRATCH_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def pvc_volumes(paths: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) mounting each claim at /mnt/pvc/CLAIM."""
    names = claims(paths)
    volumes = [{"name": volume_name(c), "persistentVolumeClaim": {"claimName": c}} for c in names]
    mounts = [{"name": volume_name(c), "mountPath": f"{POD_PVC_ROOT}/{c}"} for c in names]
    return volumes, mounts


def container_env(spec_json: dict[str, Any], instruction: DeviceInstruction, name: str) -> list[dict[str, Any]]:
    """The job container's environment: spec, device instruction, the resource's name, the pod's identity."""
    env: list[dict[str, Any]] = [
        {"name": contract.ENV_SPEC, "value": json.dumps(spec_json, separators=(",", ":"), sort_keys=True)},
        *({"name": k, "value": v} for k, v in instruction.env().items()),
        {"name": contract.ENV_NAME, "value": name},
        {"name": contract.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": contract.ENV_POD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if instruction.device == "cpu":
        # A CUDA base image sets NVIDIA_VISIBLE_DEVICES=all; on a node whose
        # default runtime is nvidia, a CPU pod would otherwise see every GPU.
        env.append({"name": contract.ENV_NVIDIA_VISIBLE_DEVICES, "value": "void"})
    return env


# spec.storage.secretName: the Secret's keys, under their clouds' standard names, become the
# container's environment, for the URL schemes the job's paths use (gpubatch_jobs/storage/ reads
# them): AWS_* for s3://, AZURE_STORAGE_* for az://, and for gs:// the key service-account.json
# mounted read-only as a file that GOOGLE_APPLICATION_CREDENTIALS names. Only that Secret of the
# job's own namespace, only these keys (contract.STORAGE_SECRET_ENV), and no token cross.
GCS_CREDENTIALS_VOLUME = "gpubatch-gcs-credentials"


def storage_schemes(spec: CommonSpec, paths: list[str] | None = None) -> list[str]:
    """The object-store schemes among the job's paths (all of them when `paths` is None: the input and output)."""
    listed = paths if paths is not None else [str(spec.input.path), str(spec.output.path)]
    found = {str(path).partition("://")[0] for path in listed if "://" in str(path)}
    return [scheme for scheme in contract.STORAGE_SECRET_ENV if scheme in found]


def _secret_name(spec: CommonSpec) -> str | None:
    return spec.storage.secret_name if spec.storage is not None else None


def storage_env(spec: CommonSpec, paths: list[str] | None = None) -> list[dict[str, Any]]:
    """Env entries from spec.storage.secretName; none without it (workload identity via the ServiceAccount)."""
    secret = _secret_name(spec)
    if not secret:
        return []
    env: list[dict[str, Any]] = []
    for scheme in storage_schemes(spec, paths):
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
                for key, optional in contract.STORAGE_SECRET_ENV[scheme]]
        if scheme == "gs":
            env.append({"name": contract.GOOGLE_APPLICATION_CREDENTIALS,
                        "value": f"{contract.GCS_CREDENTIALS_DIR}/{contract.GCS_CREDENTIALS_KEY}"})
    return env


def storage_volumes(spec: CommonSpec, paths: list[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): the gs:// service-account key of spec.storage.secretName as a read-only
    file (the key is required: a Secret without it keeps the pod in ContainerCreating, FailedMount)."""
    secret = _secret_name(spec)
    if not secret or "gs" not in storage_schemes(spec, paths):
        return [], []
    volume = {"name": GCS_CREDENTIALS_VOLUME, "secret": {
        "secretName": secret, "defaultMode": 0o440,
        "items": [{"key": contract.GCS_CREDENTIALS_KEY, "path": contract.GCS_CREDENTIALS_KEY}]}}
    mount = {"name": GCS_CREDENTIALS_VOLUME, "mountPath": contract.GCS_CREDENTIALS_DIR, "readOnly": True}
    return [volume], [mount]


def resources(spec: CommonSpec, device: str, gpu_resource: str) -> dict[str, Any]:
    wanted = spec.resources.wire() if spec.resources is not None else {}
    out: dict[str, Any] = {k: {n: str(q) for n, q in v.items()} for k, v in wanted.items() if v}
    limits = out.setdefault("limits", {})
    if device == "gpu":
        limits[gpu_resource] = str(spec.device.gpus)
    else:
        limits.pop(gpu_resource, None)
        out.get("requests", {}).pop(gpu_resource, None)
    if not limits:
        del out["limits"]
    return out


def tolerations(spec: CommonSpec, device: str, gpu_resource: str) -> list[dict[str, Any]]:
    listed = [t.wire() for t in spec.tolerations or []]
    if device == "gpu":
        listed.append({"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    return listed

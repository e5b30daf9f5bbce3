"""The contract between the operator and the job pod: everything that crosses from one to the other.

The operator (operator/gpubatch_operator) and the engine in the pod
(`gpubatch-job KIND`) agree on nothing that is not written here:

- a kind's row (`KindInfo`: kind, plural, short name, the entrypoint's word); each kind
  declares its row in its plug-in (gpubatch_jobs/kinds/);
- the environment the operator gives the job container (`ENV_*`);
- the device instruction: the operator decides `gpu` or `cpu`; the pod obeys
  and, when the GPU is unusable or fails, does what `onGpuFailure` says
  (`exit`: end with 75 so the operator can re-run on the CPU image; `cpu`:
  finish on the CPU in this process). Policies (`auto|gpu|cpu`) never reach
  the pod: the operator turns them into a device (decide.py), and `gpubatch
  run` on a laptop turns them into an instruction in one place,
  `instruction_for_policy` below;
- the exit codes and what the operator does with each;
- the labels and annotations on Jobs and pods (including the progress
  annotation the pod writes and the test hook the kwok cluster uses);
- the phases of a resource and the reasons the operator gives.

Only the standard library is imported here: both the operator image and the
job images load it. docs/architecture.md describes how it is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

API_GROUP = "gpubatch.dev"
API_VERSION = "v1alpha1"
API = f"{API_GROUP}/{API_VERSION}"


# --- the kinds -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KindInfo:
    """One gpubatch kind as both sides name it: the contract row of a kind's plug-in.

    The table of kinds is the plug-in registry, gpubatch_jobs/kinds/: one declaration per kind.
    """

    kind: str  # RenderJob
    plural: str  # renderjobs
    singular: str  # renderjob
    short_name: str  # rj
    command: str  # render, as in `gpubatch-job render` and the Job name `NAME-render`


# --- devices and policies ------------------------------------------------------------------------

DEVICES = ("gpu", "cpu")
DEVICE_POLICIES = ("auto", "gpu", "cpu")
ON_GPU_FAILURE = ("exit", "cpu")


class ContractError(ValueError):
    """The pod was handed an instruction outside the contract (a version skew, or a hand-made pod)."""


@dataclass(frozen=True)
class DeviceInstruction:
    """What the pod is told: the device to use, and what to do when the GPU is unusable or fails.

    device        gpu | cpu, decided by the operator (or by `gpubatch run` from the policy)
    on_gpu_failure exit: end with EXIT_GPU_UNUSABLE (75), and the operator re-runs on the CPU
                   image when spec.device.fallbackOnGpuFailure allows; cpu: finish on the CPU here.
    """

    device: str
    on_gpu_failure: str = "exit"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ContractError(f"{ENV_DEVICE}={self.device!r}: must be one of {', '.join(DEVICES)}")
        if self.on_gpu_failure not in ON_GPU_FAILURE:
            raise ContractError(
                f"{ENV_ON_GPU_FAILURE}={self.on_gpu_failure!r}: must be one of {', '.join(ON_GPU_FAILURE)}"
            )

    @property
    def fall_back_here(self) -> bool:
        return self.on_gpu_failure == "cpu"

    def env(self) -> dict[str, str]:
        return {ENV_DEVICE: self.device, ENV_ON_GPU_FAILURE: self.on_gpu_failure}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeviceInstruction | None:
        """The instruction in the environment; None when the operator gave none (not in a pod)."""
        env = os.environ if env is None else env
        device = env.get(ENV_DEVICE, "").strip()
        if not device:
            return None
        return cls(device, env.get(ENV_ON_GPU_FAILURE, "").strip() or "exit")


def instruction_for_policy(policy: str) -> DeviceInstruction:
    """The one place a device policy becomes an instruction, for `gpubatch run` (no operator).

    auto: try the GPU, finish on the CPU if it is unusable or fails; gpu: a GPU is
    required (exit 75 without one); cpu: the CPU.
    """
    if policy not in DEVICE_POLICIES:
        raise ContractError(f"device policy {policy!r}: must be one of {', '.join(DEVICE_POLICIES)}")
    if policy == "auto":
        return DeviceInstruction("gpu", "cpu")
    return DeviceInstruction(policy, "exit")


# --- the environment of the job container --------------------------------------------------------

ENV_SPEC = "GPUBATCH_SPEC"  # the validated spec, JSON (wire form)
ENV_SPEC_FILE = "GPUBATCH_SPEC_FILE"  # or a file holding it
ENV_DEVICE = "GPUBATCH_DEVICE"  # gpu | cpu: the device the operator decided
ENV_ON_GPU_FAILURE = "GPUBATCH_ON_GPU_FAILURE"  # exit | cpu
ENV_NAME = "GPUBATCH_NAME"  # the resource's name (for outputs and logs)
ENV_POD_NAME = "POD_NAME"  # downward API: where the progress annotation goes
ENV_POD_NAMESPACE = "POD_NAMESPACE"
ENV_PVC_ROOT = "GPUBATCH_PVC_ROOT"  # where claims are mounted (default POD_PVC_ROOT)
ENV_TERMINATION_LOG = "GPUBATCH_TERMINATION_LOG"  # where the summary goes (default TERMINATION_LOG)
ENV_LOG_LEVEL = "GPUBATCH_LOG_LEVEL"
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by the Job controller in an Indexed Job
ENV_POD_IP = "POD_IP"  # downward API, on a Spark driver's pod: executors reach the driver by it
# A CUDA base image sets it to `all`; on a node whose runtime exposes every GPU to every
# container, a CPU pod of the GPU image is given `void` so it sees none (builders/pod.py).
ENV_NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
# TrainJob workers > 1: every worker's host:port, comma-separated, in index order (the
# headless Service's stable names in a pod, loopback ports under `gpubatch run --workers`);
# a worker's own index is ENV_COMPLETION_INDEX.
ENV_WORKER_HOSTS = "GPUBATCH_WORKER_HOSTS"
WORKER_PORT = 2222  # the port every worker pod listens on (TensorFlow's gRPC, JAX's coordinator)

POD_PVC_ROOT = "/mnt/pvc"  # pvc://CLAIM/sub is mounted at /mnt/pvc/CLAIM
TERMINATION_LOG = "/dev/termination-log"  # the container's terminationMessagePath
TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message
CONTAINER_NAME = "main"


# --- exit codes ----------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_BAD_INPUT = 1  # the spec or the data is wrong: never retried; the message names the field or file
EXIT_UNEXPECTED = 2  # anything unforeseen (an OSError, a framework error): retried up to backoffLimit
EXIT_HOST_OOM = 3  # the host ran out of memory: retried
EXIT_GPU_UNUSABLE = 75  # EX_TEMPFAIL: the GPU is unusable or failed; the operator may re-run on the CPU
EXIT_TERMINATED = 143  # 128 + SIGTERM: the pod was deleted, evicted or preempted; retried, and resumes

# Exit codes that end the Job at once (podFailurePolicy FailJob), and the reason the resource gets.
FAIL_AT_ONCE: dict[int, str] = {EXIT_BAD_INPUT: "BadInput", EXIT_GPU_UNUSABLE: "GpuUnusable"}
EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_BAD_INPUT: "bad spec or data: the Job fails at once, never retried",
    EXIT_UNEXPECTED: "an unexpected error: retried up to spec.backoffLimit",
    EXIT_HOST_OOM: "the host ran out of memory: retried up to spec.backoffLimit",
    EXIT_GPU_UNUSABLE: "the GPU is unusable or failed: re-run on the CPU when device.fallbackOnGpuFailure",
    EXIT_TERMINATED: "stopped by SIGTERM (pod deleted, evicted, preempted): retried, resuming from what was written",
}


# --- labels and annotations ----------------------------------------------------------------------

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gpubatch-operator"
NAME_LABEL = "app.kubernetes.io/name"
KIND_LABEL = f"{API_GROUP}/kind"  # renderjob | trainjob | predictjob
OWNER_NAME_LABEL = f"{API_GROUP}/owner"  # the resource's name, shortened past 63 characters: for people
OWNER_UID_LABEL = f"{API_GROUP}/owner-uid"  # the resource's UID: what children are keyed by
DEVICE_LABEL = f"{API_GROUP}/device"
ATTEMPT_LABEL = f"{API_GROUP}/attempt"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # spec.priorityClass: a WorkloadPriorityClass
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
# On the job pods' ServiceAccount, Role and RoleBinding, whoever made them (operator or chart):
# the operator watches ServiceAccounts with it and re-creates a deleted one.
JOB_IDENTITY_LABEL = f"{API_GROUP}/job-identity"
JOB_IDENTITY_SELECTOR = f"{JOB_IDENTITY_LABEL}=true"

PROGRESS_ANNOTATION = f"{API_GROUP}/progress"  # written by the pod: {"done","total","stage"}
# A resource's name: it names the Job, the Indexed pods' host names and a worker group's
# Service (a DNS-1035 label), so a letter first, no dots (refused by the CRD and the operator).
RESOURCE_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Test hook (off unless the operator's GPUBATCH_TEST_HOOKS is on): resource annotations with
# this prefix are copied onto the job pods, so the kwok test cluster can script a pod's fate.
TEST_ANNOTATION_PREFIX = f"{API_GROUP}/test-"


# --- phases, conditions, reasons -----------------------------------------------------------------

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED)
FINAL_PHASES = frozenset({SUCCEEDED, FAILED})
# Condition types, in the order status.conditions lists them.
JOB_CREATED, COND_RUNNING, COND_SUCCEEDED, COND_FAILED, FELL_BACK_TO_CPU = (
    "JobCreated", "Running", "Succeeded", "Failed", "FellBackToCPU")
CONDITION_TYPES = (JOB_CREATED, COND_RUNNING, COND_SUCCEEDED, COND_FAILED, FELL_BACK_TO_CPU)

# The reason of the latest transition (status.conditions[].reason, the Event's reason), beside
# JOB_CREATED and the fallback and refusal reasons below.
QUEUED = "Queued"  # a Job Kueue has not admitted yet
UNSCHEDULABLE = "Unschedulable"  # a pod no node fits (yet)
STARTED = "Started"  # a pod is running
COMPLETED = "Completed"  # the Job completed: the outputs are published
GROUP_RESTARTING = "GroupRestarting"  # a worker failed: the whole group starts again
INVALID_SPEC = "InvalidSpec"  # the stored spec does not validate (written around the CRD's schema)
JOB_FAILED = "Failed"  # a Job failed with no exit code of the contract to name it

# Why a resource moved to the CPU.
NO_GPU_NODES, GPU_UNSCHEDULABLE, GPU_UNUSABLE = "NoGpuNodes", "GpuUnschedulable", "GpuUnusable"
# A GPU Job Kueue kept suspended (not admitted: the queue's GPU quota is used up) past gpuPendingTimeout.
GPU_QUOTA_EXHAUSTED = "GpuQuotaExhausted"

# Why the operator refused a resource at once (Failed, no Job made; docs/security.md).
IMAGE_NOT_ALLOWED = "ImageNotAllowed"  # spec.image outside the operator's allow-list
TOLERATION_NOT_ALLOWED = "TolerationNotAllowed"  # a toleration of every taint, not allowed by the admin
INVALID_NAME = "InvalidName"  # a name that cannot make the Job or the workers' Service
API_REFUSED = "ApiRefused"  # the API server refused a child for good (422)
NAME_TAKEN = "NameTaken"  # a child's name is held by an object the operator did not make

# --- logs that outlive pods -----------------------------------------------------------------------

# The engine in a pod keeps the last LOG_LIMIT bytes of its stdout and stderr next to its outputs:
# one file per pod (so per attempt, retry, worker and shard) under log_folder(spec.output.path).
# The operator records the same folder in status.logRef; `gpubatch logs` reads it once the pods are gone.
LOG_LIMIT = 1 << 20
LOG_SUFFIX = ".logs"


def log_folder(output_path: str) -> str:
    """Where the pods of a job with this output keep their logs: `<output>.logs` beside the output.

    `pvc://data/out/charts.h5` -> `pvc://data/out/charts.h5.logs`; a folder output (TrainJob)
    gets a sibling folder, so the log never lands inside what the engine publishes.
    """
    return output_path.rstrip("/") + LOG_SUFFIX


def log_file_name(pod_name: str) -> str:
    return f"{pod_name}.log"

# --- object storage credentials ---

# What crosses from the Secret named by spec.storage.secretName (in the job's own namespace) into
# the job container, per URL scheme of the job's paths: the operator maps these keys, under the
# same names, as secretKeyRef env entries (builders/pod.py storage_env); the drivers under
# gpubatch_jobs/storage/ read them. Nothing else of the Secret, and no token, is mapped.
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
AWS_REGION = "AWS_REGION"
GOOGLE_APPLICATION_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"
STORAGE_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"
AZURE_STORAGE_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
AZURE_STORAGE_ACCOUNT_NAME = "AZURE_STORAGE_ACCOUNT_NAME"
AZURE_STORAGE_ACCOUNT_KEY = "AZURE_STORAGE_ACCOUNT_KEY"
AZURE_STORAGE_SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"

# gs://: the service-account JSON is the Secret's key GCS_CREDENTIALS_KEY, mounted read-only as a
# file under GCS_CREDENTIALS_DIR, and GOOGLE_APPLICATION_CREDENTIALS names that file.
GCS_CREDENTIALS_KEY = "service-account.json"
GCS_CREDENTIALS_DIR = "/var/run/secrets/gpubatch/gcs"

# scheme -> ((Secret key, optional), ...): env entries. A required key missing from the Secret
# stops the pod at CreateContainerConfigError, which names it.
STORAGE_SECRET_ENV: dict[str, tuple[tuple[str, bool], ...]] = {
    "s3": ((AWS_ACCESS_KEY_ID, False), (AWS_SECRET_ACCESS_KEY, False), (AWS_SESSION_TOKEN, True),
           (AWS_ENDPOINT_URL, True), (AWS_REGION, True)),
    "gs": ((STORAGE_EMULATOR_HOST, True),),
    "az": ((AZURE_STORAGE_CONNECTION_STRING, True), (AZURE_STORAGE_ACCOUNT_NAME, True),
           (AZURE_STORAGE_ACCOUNT_KEY, True), (AZURE_STORAGE_SAS_TOKEN, True)),
}

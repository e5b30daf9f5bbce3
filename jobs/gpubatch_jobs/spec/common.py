"""Fields shared by every gpubatch kind: device policy, scheduling, data locations.

Field names are snake_case in Python and camelCase on the wire (the Kubernetes
convention); `model_dump(by_alias=True)` gives the wire form. Every model
forbids unknown fields, so a typo such as `seqlen` is an error rather than a
silently ignored setting.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from gpubatch_jobs.contract import API_GROUP, API_VERSION  # noqa: F401 - re-exported: the API's name

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
# No sign but '+': a negative request or limit is refused at admission, not by the Job later.
QUANTITY_PATTERN = (
    r"^(\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A path is a local path, pvc://CLAIM/sub/path (CLAIM is a DNS label), s3://BUCKET/KEY (an S3
# bucket name: 3-63 lowercase letters, digits, '.' and '-'), gs://BUCKET/OBJECT (a GCS bucket
# name: 3-222 lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or
# digit) or az://CONTAINER/BLOB (an Azure container name: 3-63 lowercase letters, digits and '-').
PATH_PATTERN = (r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?"
                r"|gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?|az://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/.*)?"
                r"|[^:]+)$")
URL_SCHEME_RE = r"^[a-z0-9]+://"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Fields whose default the operator supplies from its settings (Helm values), so the
# CRD carries no schema default for them: an unset field stays unset in the cluster.
OPERATOR_DEFAULT: dict[str, Any] = {"x-gpubatch-operator-default": True}

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``90s``, ``5m`` or ``1h30m``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration; use e.g. 30s, 5m, 1h30m")
    return sum(
        float(number) * _DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text)
    )


class ApiModel(BaseModel):
    """Base for every API model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON form, as stored in the cluster."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class DevicePolicy(str, Enum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"


class InputFormat(str, Enum):
    auto = "auto"
    hdf5 = "hdf5"
    npy = "npy"
    npz = "npz"
    csv = "csv"
    parquet = "parquet"


class JobPhase(str, Enum):
    Pending = "Pending"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
Quantity = Annotated[Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=QUANTITY_PATTERN)], Field()]

# A `..` segment could climb out of a claim's mount (pvc://data/../../var/run/secrets/...):
# the API server refuses it in any path (CEL), the model in every URL (pvc://, s3://, gs://, az://). A
# local path with `..` stays valid for `gpubatch run` on a laptop (the user's own files);
# a job pod accepts no local path at all, and checks where a pvc:// path really leads
# (symlinks followed) when it opens the file (runtime.RunContext.confined).
PARENT_SEGMENT_RE = r"(^|/)\.\.(/|$)"
NO_PARENT_SEGMENT = {
    "rule": f"!self.matches('{PARENT_SEGMENT_RE.replace(chr(92), chr(92) * 2)}')",
    "message": "a '..' segment is not allowed in a path: name the file from its claim or bucket root",
}


def _no_parent_segment(value: str) -> str:
    if re.match(URL_SCHEME_RE, value) and re.search(PARENT_SEGMENT_RE, value):
        raise ValueError(NO_PARENT_SEGMENT["message"])
    return value


DataPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, pattern=PATH_PATTERN,
          json_schema_extra={"x-kubernetes-validations": [NO_PARENT_SEGMENT]}),
    AfterValidator(_no_parent_segment),
]
BatchSize = Literal["auto"] | Annotated[int, Field(ge=1, le=1_048_576)]


class DeviceSpec(ApiModel):
    """Where the work runs. One field decides both the pod and the engine."""

    policy: DevicePolicy = Field(
        DevicePolicy.auto,
        description=(
            "auto: GPU when the cluster has one free, else CPU; gpu or cpu: as asked. "
            "Unset: the operator's default (Helm value defaults.devicePolicy), else auto."
        ),
        json_schema_extra=OPERATOR_DEFAULT,
    )
    gpus: int = Field(1, ge=1, le=16, description="nvidia.com/gpu limit of a GPU pod.")
    gpu_pending_timeout: Duration = Field(
        "5m",
        description=(
            "auto only: how long a GPU pod may stay unschedulable before the job is re-created on CPU. "
            "Unset: the operator's default (Helm value defaults.gpuPendingTimeout), else 5m."
        ),
        json_schema_extra=OPERATOR_DEFAULT,
    )
    fallback_on_gpu_failure: bool = Field(
        True,
        description=(
            "When the GPU is unusable or fails mid-run (other than out-of-memory), finish on the CPU: the GPU "
            "pod exits 75 and the operator re-runs the job on the CPU image. false: the job fails (GpuUnusable)."
        ),
    )

    @field_validator("gpu_pending_timeout")
    @classmethod
    def _positive_timeout(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a positive duration such as 30s or 5m")
        return value


class ResourceRequirements(ApiModel):
    # Bounded maps: the API server prices each CEL rule by the most entries a map may hold.
    requests: dict[str, Quantity] | None = Field(None, max_length=32, description="e.g. {cpu: '2', memory: 8Gi}")
    limits: dict[str, Quantity] | None = Field(None, max_length=32, description="e.g. {memory: 16Gi}")


class Toleration(ApiModel):
    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class ImageSpec(ApiModel):
    """Image overrides; empty fields use the operator's configured images."""

    gpu: str | None = Field(None, min_length=1, max_length=512, description="Image for GPU pods.")
    cpu: str | None = Field(None, min_length=1, max_length=512, description="Image for CPU pods.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None


class InputSpec(ApiModel):
    """Where the data comes from: a local path or pvc://CLAIM/sub/path."""

    path: DataPath = Field(..., description="File to read: local path, pvc://CLAIM/sub/path, s3://BUCKET/KEY, gs://BUCKET/OBJECT "
                                            "or az://CONTAINER/BLOB.")
    format: InputFormat = Field(InputFormat.auto, description="auto: from the file extension.")
    dataset: str | None = Field(
        None, min_length=1, max_length=1024, description="HDF5 dataset holding the data."
    )
    column: str | None = Field(
        None, min_length=1, max_length=1024, description="CSV/Parquet column holding a single series."
    )
    labels: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Labels: an HDF5 dataset or a CSV/Parquet column name.",
    )
    features: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=100_000, description="Feature columns; default: every numeric column left."
    )
    id_column: str | None = Field(
        None, min_length=1, max_length=1024, description="Sequence data: the document id column."
    )
    position_column: str | None = Field(
        None, min_length=1, max_length=1024, description="Sequence data: the row's position in its document."
    )


class OutputSpec(ApiModel):
    path: DataPath = Field(
        ..., description="Where results go: local path, pvc://CLAIM/sub/path, s3://BUCKET/KEY, gs://BUCKET/OBJECT or "
                         "az://CONTAINER/BLOB."
    )
    format: Literal["auto", "hdf5", "parquet"] = Field(
        "auto", description="PredictJob: parquet (default) or hdf5. Others: their native format."
    )
    overwrite: bool = Field(
        False, description="Replace a finished output that already exists (else: an error)."
    )


class StorageSpec(ApiModel):
    """Object storage (s3://, gs://, az:// paths): where the job pod's credentials and endpoint come from."""

    secret_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Secret in the job's namespace whose keys, for the schemes the paths use, become the job "
            "container's environment: s3:// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optional) "
            "AWS_ENDPOINT_URL, AWS_REGION, AWS_SESSION_TOKEN; gs:// service-account.json (mounted "
            "read-only, named by GOOGLE_APPLICATION_CREDENTIALS) and (optional) STORAGE_EMULATOR_HOST; "
            "az:// (optional) AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME, "
            "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN. Unset: nothing is injected (workload identity through the job "
            "ServiceAccount's annotations, Helm jobServiceAccount.annotations)."
        ),
    )


class Condition(ApiModel):
    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class CommonSpec(ApiModel):
    """Fields every kind has: device, scheduling, data, lifecycle."""

    device: DeviceSpec = Field(default_factory=DeviceSpec, json_schema_extra={"default": {}})
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = Field(None, max_length=64)
    image: ImageSpec | None = None
    backoff_limit: int = Field(2, ge=0, le=100, description="Retries of a failed pod (not for exit 1 or 75).")
    active_deadline_seconds: int | None = Field(None, ge=1)
    termination_grace_period_seconds: int | None = Field(
        None, ge=1, le=3600,
        description=("Seconds a pod has after SIGTERM (preemption, eviction, deletion) to finish the step, "
                     "chunk or image in flight and save it before it is killed; unset: the operator's "
                     "default (Helm jobTerminationGracePeriodSeconds, 60)."),
    )
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    queue_name: str | None = Field(
        None,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Kueue LocalQueue; the Job is created suspended with the queue-name label.",
    )
    priority_class: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=("Kueue WorkloadPriorityClass of the Job (its kueue.x-k8s.io/priority-class label): "
                     "with queueName, a higher one may preempt lower ones in the ClusterQueue."),
    )
    storage: StorageSpec | None = Field(None, description="Credentials for s3://, gs:// and az:// paths (a Secret).")
    input: InputSpec
    output: OutputSpec = Field(
        ...,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.path == oldSelf.path",
                    "message": "spec.output.path is immutable: create a new job to write elsewhere",
                }
            ]
        },
    )

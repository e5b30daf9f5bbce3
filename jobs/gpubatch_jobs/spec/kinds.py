"""The three kinds' models (RenderJob, TrainJob, PredictJob): spec, status and resource.

Each kind's plug-in (gpubatch_jobs/kinds/) names its models here.

Cross-field rules are written twice on purpose: as pydantic validators (for
`gpubatch run` and the operator) and as CEL rules in `x-kubernetes-validations`
(so the API server itself refuses the manifest). A test keeps both in step by
feeding the same bad manifests to each.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gpubatch_jobs.spec.common import (
    ApiModel,
    BatchSize,
    CommonSpec,
    Condition,
    DataPath,
    JobPhase,
)


def _cel(rule: str, message: str) -> dict[str, Any]:
    return {"rule": rule, "message": message}


# The spec is the job, as a batch/v1 Job's template is: an edit is refused by the API
# server instead of being half-applied (a running Job cannot change, yet a later CPU
# re-run would be built from the edited spec). To change a job, delete and re-create it.
SPEC_IS_IMMUTABLE = _cel(
    "self == oldSelf",
    "spec is immutable once the job exists (the running Job cannot follow an edit); "
    "to change it, delete the resource and create it again, e.g. kubectl replace --force -f FILE",
)
FALLBACK_FIELDS_AGREE = _cel(
    "!has(self.fallbackOnError) || !has(self.device) || !has(self.device.fallbackOnGpuFailure) "
    "|| self.fallbackOnError == self.device.fallbackOnGpuFailure",
    "spec.fallbackOnError is deprecated and disagrees with spec.device.fallbackOnGpuFailure: "
    "remove spec.fallbackOnError",
)


class RenderJobSpec(CommonSpec):
    """Numeric sequences to line-chart images, written to HDF5."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                SPEC_IS_IMMUTABLE,
                _cel("self.shards == oldSelf.shards", "spec.shards is immutable once the job exists"),
                FALLBACK_FIELDS_AGREE,
            ]
        }
    }

    seq_len: int = Field(100, ge=2, le=65_536, description="Points per image (window length of a 1-D series).")
    stride: int = Field(1, ge=1, le=65_536, description="Step between windows cut from a 1-D series.")
    width: int = Field(224, ge=8, le=8192, description="Image width in pixels.")
    height: int = Field(224, ge=8, le=8192, description="Image height in pixels.")
    line_width: float = Field(1.5, gt=0, le=64, description="Line width in pixels.")
    batch_size: BatchSize = Field("auto", description="Images per GPU batch; auto: sized from free GPU memory.")
    fallback_on_error: bool | None = Field(
        None,
        description=(
            "Deprecated: use device.fallbackOnGpuFailure, which means the same (finish on the CPU when the "
            "GPU is unusable or fails, other than out-of-memory). When set, it is copied there."
        ),
    )
    shards: int = Field(1, ge=1, le=10_000, description="Parts rendered by an Indexed Job, one pod each.")
    preview_images: int = Field(64, ge=0, le=4096, description="Images in the PNG preview grid (0: none).")

    @model_validator(mode="after")
    def _one_fallback_field(self) -> RenderJobSpec:
        if self.fallback_on_error is None:
            return self
        given = "fallback_on_gpu_failure" in self.device.model_fields_set
        if given and self.device.fallback_on_gpu_failure != self.fallback_on_error:
            raise ValueError(
                "fallbackOnError is deprecated and disagrees with device.fallbackOnGpuFailure: remove fallbackOnError"
            )
        self.device.fallback_on_gpu_failure = self.fallback_on_error
        self.device.model_fields_set.add("fallback_on_gpu_failure")
        return self


class TrainModelSpec(ApiModel):
    """The model to train: a type and its parameters (each type reads its own)."""

    type: Literal["dnn", "rnn", "cnn"] = Field(..., description="dnn: tabular; rnn: sequence labelling; cnn: images.")
    hidden_units: list[int] = Field(
        default_factory=lambda: [64, 32], min_length=1, max_length=16, description="dnn: width of each hidden layer."
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout rate after each hidden layer.")
    cell: Literal["lstm", "gru"] = Field("lstm", description="rnn: recurrent cell.")
    layers: int = Field(2, ge=1, le=8, description="rnn: stacked recurrent layers.")
    hidden_size: int = Field(128, ge=1, le=8192, description="rnn: units per recurrent layer.")
    bidirectional: bool = Field(False, description="rnn: read each window both ways.")
    window_size: int = Field(50, ge=1, le=100_000, description="rnn: lines per training window.")
    window_stride: int | None = Field(None, ge=1, le=100_000, description="rnn: step between windows (default window/2).")
    filters: list[int] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=8, description="cnn: filters per conv block."
    )
    kernel_size: int = Field(3, ge=1, le=31, description="cnn: convolution kernel size.")

    @model_validator(mode="after")
    def _layer_sizes(self) -> TrainModelSpec:
        for i, units in enumerate(self.hidden_units):
            if not 1 <= units <= 65_536:
                raise ValueError(f"hiddenUnits[{i}] must be between 1 and 65536 (got {units})")
        for i, count in enumerate(self.filters):
            if not 1 <= count <= 4096:
                raise ValueError(f"filters[{i}] must be between 1 and 4096 (got {count})")
        return self


class TrainJobSpec(CommonSpec):
    """Train a Keras model; the output path is a folder of artifacts."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                SPEC_IS_IMMUTABLE,
                _cel(
                    "!has(self.workers) || self.workers == 1 || !has(self.backend) || self.backend != 'torch'",
                    "spec.workers > 1 needs backend tensorflow or jax: Keras has no multi-worker path for torch; "
                    "set workers: 1 or choose another backend",
                ),
                _cel(
                    "!has(self.workers) || self.workers == 1 || "
                    "(has(self.batchSize) ? self.batchSize : 64) % self.workers == 0",
                    "spec.batchSize is the global batch and must be a multiple of spec.workers "
                    "(each worker takes batchSize / workers)",
                ),
            ]
        }
    }

    model: TrainModelSpec
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1_048_576)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    validation_split: float = Field(0.2, ge=0, lt=1, description="Fraction held out for validation.")
    class_weight: Literal["none", "balanced"] = Field("none", description="balanced: weight classes by inverse frequency.")
    backend: Literal["tensorflow", "torch", "jax"] = Field("tensorflow", description="Keras backend.")
    mixed_precision: Literal["auto", "on", "off"] = Field("auto", description="auto: on where the GPU supports it.")
    checkpoints: bool = Field(True, description="Checkpoint every epoch; a restarted pod resumes from the last one.")
    early_stopping_patience: int | None = Field(None, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    workers: int = Field(
        1, ge=1, le=256,
        description=(
            "Pods training together with the framework's own multi-worker engine (TensorFlow "
            "MultiWorkerMirroredStrategy, JAX jax.distributed + Keras DataParallel); an Indexed Job and a "
            "headless Service. batchSize stays the global batch. Not with backend torch."
        ),
    )

    @model_validator(mode="after")
    def _workers(self) -> TrainJobSpec:
        if self.workers > 1 and self.backend == "torch":
            raise ValueError(
                f"workers: {self.workers} needs backend tensorflow or jax: Keras has no multi-worker path for "
                "torch; set workers: 1 or choose another backend"
            )
        if self.workers > 1 and self.batch_size % self.workers:
            raise ValueError(
                f"batchSize ({self.batch_size}) is the global batch and must be a multiple of workers "
                f"({self.workers}), so each worker takes batchSize / workers"
            )
        return self


# spark.conf keys a tenant may not set (docs/security.md): the master and where the driver
# and executors run (spark.kubernetes.*, spark.driver.*, spark.submit.*), authentication and
# TLS, anything that loads code or files into the driver, which runs as the Spark driver
# identity (jars, plug-ins, listeners, extra class paths, Java options, environment,
# Python executables), and every key the engine sets itself (predict/spark_session.py,
# predict/spark_k8s.py, and the s3a:// settings of predict/spark_s3.py: where the S3 server is
# and how credentials are read). Exact keys end with "$"; the others are prefixes.
SPARK_CONF_REFUSED: tuple[str, ...] = (
    "spark.master$", "spark.remote", "spark.api.mode", "spark.submit.", "spark.kubernetes.", "spark.driver.",
    "spark.authenticate", "spark.ssl.", "spark.network.crypto.", "spark.io.encryption.", "spark.acls.",
    "spark.admin.acls", "spark.modify.acls", "spark.ui.", "spark.user.groups.", "spark.security.",
    "spark.redaction.", "spark.jars", "spark.files", "spark.archives", "spark.plugins", "spark.extraListeners",
    "spark.sql.extensions", "spark.sql.queryExecutionListeners", "spark.sql.streaming.streamingQueryListeners",
    "spark.executor.extra", "spark.executor.plugins", "spark.executorEnv.", "spark.executor.instances$",
    "spark.executor.resource.", "spark.task.resource.", "spark.dynamicAllocation.", "spark.pyspark.",
    "spark.python.", "spark.app.name$", "spark.sql.execution.arrow.", "spark.sql.shuffle.partitions$",
    "spark.metrics.", "spark.eventLog.", "spark.shuffle.service.", "spark.decommission.", "spark.yarn.",
    "spark.standalone.", "spark.deploy.", "spark.hadoop.fs.s3a.",
)
SPARK_CONF_MAX_KEYS = 128


def spark_conf_refused(key: str) -> bool:
    """True when a tenant may not set this spark.conf key (SPARK_CONF_REFUSED)."""
    return any(key == p[:-1] if p.endswith("$") else key.startswith(p) for p in SPARK_CONF_REFUSED)


def _spark_conf_cel() -> dict[str, Any]:
    # startsWith and size() only: cheap for the API server's CEL cost estimate.
    tests = " || ".join(
        f"(k.startsWith('{p[:-1]}') && k.size() == {len(p) - 1})" if p.endswith("$") else f"k.startsWith('{p}')"
        for p in SPARK_CONF_REFUSED)
    return {
        "rule": f"!self.exists(k, {tests})",
        "messageExpression": (f"'spec.spark.conf: ' + self.filter(k, {tests})[0] + "
                              "' may not be set (master, Kubernetes, driver, authentication, TLS, code-loading "
                              "and engine-set keys are set by gpubatch only; see docs/security.md)'"),
        "message": "spec.spark.conf sets a key a job may not set (see docs/security.md)",
    }


# spec.spark.master: Spark inside the pod, or executor pods through the cluster's own API
# server. A k8s:// URL elsewhere would receive the driver identity's token.
SPARK_MASTER_PATTERN = (r"^(local(\[([0-9]+|\*)(,[0-9]+)?\])?"
                        r"|k8s://https://kubernetes\.default(\.svc(\.cluster\.local)?)?(:443)?)$")


class SparkSpec(ApiModel):
    # No API defaults for master and executors: "executors given, master not" must stay visible
    # after the API server has stored the object (a CRD default would fill both in).
    master: str | None = Field(None, min_length=1, max_length=1024, pattern=SPARK_MASTER_PATTERN, description=(
        "Spark master URL: local, local[N] or local[*] (inside the pod), or "
        "k8s://https://kubernetes.default.svc (the cluster's own API server: the job pod is the driver, "
        "in client mode, of executor pods). Unset: local[*], or, with executors set, the in-cluster "
        "API server."))
    gpu_in_udf: bool = Field(False, description="true: each executor uses the GPU Spark assigned it; false: GPUs hidden.")
    executors: int | None = Field(None, ge=1, le=10_000, description=(
        "Executors when the master is a cluster (default 2); set without master: that many executor "
        "pods through the in-cluster API server."))
    partitions: int | None = Field(None, ge=1, le=1_000_000, description="Input partitions (default: by document count).")
    conf: dict[str, Annotated[str, Field(max_length=4096)]] | None = Field(
        None, max_length=SPARK_CONF_MAX_KEYS,
        description=("Extra Spark configuration (executor memory and cores, SQL tuning). Keys that set the "
                     "master, spark.kubernetes.*, spark.driver.*, authentication, TLS, code or files to load, "
                     "the s3a:// settings (spark.hadoop.fs.s3a.*: from spec.storage) or that the engine sets "
                     "itself are refused (docs/security.md)."),
        json_schema_extra={"x-kubernetes-validations": [_spark_conf_cel()]})

    @field_validator("conf")
    @classmethod
    def _conf_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        refused = [key for key in (value or {}) if spark_conf_refused(key)]
        if refused:
            shown = ", ".join(repr(key[:80]) for key in refused[:5])
            raise ValueError(f"{shown} may not be set (master, Kubernetes, driver, authentication, TLS, "
                             "code-loading and engine-set keys are set by gpubatch only; see docs/security.md)")
        return value

    @property
    def on_kubernetes(self) -> bool:
        """Executors are pods: a k8s:// master, or `executors` given without a master (the in-cluster API server)."""
        if self.master is not None:
            return self.master.startswith("k8s://")
        return self.executors is not None

    @property
    def local_master(self) -> str:
        """The master unless it is the in-cluster shorthand (resolved in the pod: spark_k8s.master_url)."""
        return self.master or "local[*]"

    @property
    def executor_count(self) -> int:
        return self.executors or 2


class PredictJobSpec(CommonSpec):
    """Sliding-window RNN inference with a TrainJob artifact."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                SPEC_IS_IMMUTABLE,
                _cel(
                    "!has(self.stride) || !has(self.windowSize) || self.stride <= self.windowSize",
                    "spec.stride must be <= spec.windowSize, or rows between windows get no prediction",
                ),
                _cel(
                    "self.engine == 'spark' || !has(self.spark)",
                    "spec.spark is only used with spec.engine: spark",
                ),
            ]
        }
    }

    model: DataPath = Field(..., description="Folder of a TrainJob artifact (model.keras + preprocessing.json).")
    window_size: int | None = Field(None, ge=1, le=100_000, description="Rows per window (default: the model's).")
    stride: int | None = Field(None, ge=1, le=100_000, description="Step between windows (default: windowSize/2).")
    batch_size: BatchSize = Field("auto", description="Windows per model call; auto: the largest that fits.")
    engine: Literal["local", "spark"] = "local"
    spark: SparkSpec | None = None
    chunk_rows: int | None = Field(
        None, ge=1, le=1 << 30,
        description=("engine local: rows per chunk of whole documents (default 1048576). Each finished chunk "
                     "is kept until the result is published, so a preempted pod loses at most the chunk "
                     "in flight; smaller chunks lose less and cost a little more."),
    )
    verbosity: int = Field(1, ge=0, le=3)

    @model_validator(mode="after")
    def _cross_fields(self) -> PredictJobSpec:
        if self.stride is not None and self.window_size is not None and self.stride > self.window_size:
            raise ValueError(
                f"stride ({self.stride}) must be <= windowSize ({self.window_size}), "
                "or rows between windows get no prediction"
            )
        if self.spark is not None and self.engine != "spark":
            raise ValueError("spark is only used with engine: spark; set engine: spark or remove spark")
        return self


class WorkersStatus(ApiModel):
    """TrainJob with workers > 1: the group's pods."""

    ready: int = Field(0, ge=0, description="Worker pods running now.")
    total: int = Field(1, ge=1, description="spec.workers.")
    per_worker_batch_size: int | None = Field(None, description="batchSize / workers: what each worker takes per step.")
    group_restarts: int = Field(0, ge=0, description="Times the whole group was restarted after a worker failed.")


class CheckpointStatus(ApiModel):
    """The last checkpoint the job's pod reported (after an epoch, or on SIGTERM mid-epoch)."""

    epoch: int | None = Field(None, description="TrainJob: epochs complete at the checkpoint.")
    step: int | None = Field(None, description="TrainJob: steps done of the next epoch (0: an epoch's end).")
    done: int | None = Field(None, description="PredictJob/RenderJob: items (rows, images) published so far.")
    time: str | None = Field(None, description="When it was written (UTC).")
    place: str | None = Field(None, description="Where it lies (a path on the PVC, or an s3:// URL).")


class JobStatus(ApiModel):
    """Written by the operator only (the spec is never written back)."""

    model_config = {"extra": "allow"}

    phase: JobPhase | None = None
    device: Literal["gpu", "cpu"] | None = None
    conditions: list[Condition] | None = None
    progress: str | None = Field(None, description="e.g. 42% (processed/total).")
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    observed_generation: int | None = None
    message: str | None = None
    attempts: int | None = Field(None, description="Jobs created for this resource (a CPU fallback adds one).")
    result: dict[str, Any] | None = Field(None, description="The engine's summary JSON.")
    workers: WorkersStatus | None = Field(None, description="TrainJob with workers > 1: ready/total and restarts.")
    checkpoint: CheckpointStatus | None = Field(None, description="The last checkpoint the pod reported.")
    preemptions: int | None = Field(
        None, description="Times a pod of this job was stopped by SIGTERM (preempted, evicted, deleted) "
                          "and saved its work first.")
    preempted_pods: list[str] | None = Field(
        None, max_length=64, description="The pods counted in preemptions (the newest 64), so each counts once.")
    log_ref: str | None = Field(
        None, description="Where every pod of this job keeps its log (the last 1 MiB), one <pod>.log per attempt: "
        "<spec.output.path>.logs. `gpubatch logs` reads it once the pods are gone.")
    estimated_remaining_seconds: int | None = Field(
        None, ge=0, description="While running: the seconds the engine estimates are left at its current rate.")
    throughput_per_second: float | None = Field(
        None, ge=0, description="While running: items per second of the current stage (summed over shards).")


class ObjectMeta(ApiModel):
    model_config = {"extra": "allow"}
    name: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None


class GpubatchResource(ApiModel):
    """A whole manifest: apiVersion, kind, metadata, spec, status."""

    model_config = {"extra": "forbid"}

    api_version: Literal["gpubatch.dev/v1alpha1"] = Field(..., alias="apiVersion")
    metadata: ObjectMeta
    status: JobStatus | None = None


class RenderJob(GpubatchResource):
    kind: Literal["RenderJob"]
    spec: RenderJobSpec


class TrainJob(GpubatchResource):
    kind: Literal["TrainJob"]
    spec: TrainJobSpec


class PredictJob(GpubatchResource):
    kind: Literal["PredictJob"]
    spec: PredictJobSpec


__all__ = [
    "DataPath",
    "JobStatus",
    "PredictJob",
    "PredictJobSpec",
    "RenderJob",
    "RenderJobSpec",
    "SparkSpec",
    "TrainJob",
    "TrainJobSpec",
    "TrainModelSpec",
]

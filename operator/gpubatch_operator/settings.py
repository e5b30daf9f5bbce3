"""The operator's settings: read once from the environment at startup.

The Helm chart sets these variables (charts/gpubatch/templates/_helpers.tpl);
`Settings.from_env()` validates them so that a typo stops the operator at
startup with a message naming the variable, instead of failing job by job.

Every setting, its variable and its default:

GPUBATCH_WATCH_NAMESPACES            comma-separated namespaces to watch; empty: all (cluster-wide)
GPUBATCH_GPU_IMAGE                   image of GPU job pods (spec.image.gpu overrides it)
GPUBATCH_CPU_IMAGE                   image of CPU job pods (spec.image.cpu overrides it)
GPUBATCH_ALLOWED_IMAGES             comma-separated images a spec.image may name (Helm jobImages.allowed):
                                     `REPO` allows any tag or digest of that repository, `PREFIX/*` any
                                     image under it; empty: the repositories of the two images above.
                                     Anything else fails at once (ImageNotAllowed), no Job made
GPUBATCH_ALLOW_TOLERATE_ALL          false (default): a toleration of every taint (operator Exists
                                     without a key) fails the resource (TolerationNotAllowed); true allows it
GPUBATCH_JOB_CLUSTER_ROLE            ClusterRole (shipped by the chart) the job ServiceAccount is bound to
                                     in each namespace: gpubatch-job (default)
GPUBATCH_SPARK_DRIVER_CLUSTER_ROLE   the same for the Spark driver's ServiceAccount: gpubatch-spark-driver
GPUBATCH_IMAGE_PULL_POLICY           imagePullPolicy of job pods: IfNotPresent (default), Always, Never
GPUBATCH_DEFAULT_DEVICE_POLICY       spec.device.policy when a job leaves it unset: auto (default), gpu, cpu
GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT spec.device.gpuPendingTimeout when unset: 5m (default)
GPUBATCH_DEFAULT_TERMINATION_GRACE_SECONDS  spec.terminationGracePeriodSeconds when unset: 60 (default);
                                     the seconds a job pod has after SIGTERM to save its work
GPUBATCH_JOB_SERVICE_ACCOUNT         ServiceAccount of job pods: gpubatch-job (default); the operator
                                     ensures it (with its Role and RoleBinding) where it launches jobs
GPUBATCH_JOB_SERVICE_ACCOUNT_ANNOTATIONS  JSON object of annotations for the job ServiceAccount the
                                     operator creates (Helm jobServiceAccount.annotations): cloud
                                     workload identity for s3:// paths, e.g. eks.amazonaws.com/role-arn
GPUBATCH_GPU_RESOURCE                extended resource of a GPU: nvidia.com/gpu (default)
GPUBATCH_METRICS_PORT                Prometheus text at :PORT/metrics: 8080 (default); 0 turns it off
GPUBATCH_HEALTH_PORT                 liveness at :PORT/healthz: 8081 (default); 0 turns it off
GPUBATCH_PEERING                     empty (default): standalone, one operator at a time; else the
                                     name of a kopf peering object (KopfPeering CRDs must be installed)
GPUBATCH_RECONCILE_WORKERS           concurrent reconciles: 16 (default)
GPUBATCH_PROGRESS_INTERVAL           least seconds between two progress-only status writes: 5 (default)
GPUBATCH_LOG_LEVEL                   DEBUG, INFO (default), WARNING, ERROR
GPUBATCH_LEADER_ELECTION             false (default): this process reconciles alone; true: replicas elect
                                     one active operator on a coordination.k8s.io Lease (the chart: true,
                                     2 replicas); the others keep their caches warm and take over
GPUBATCH_LEADER_ELECTION_NAMESPACE   namespace of the Lease: POD_NAMESPACE, else the first watched
                                     namespace, else default
GPUBATCH_LEADER_ELECTION_LEASE       name of the Lease: gpubatch-operator (default)
GPUBATCH_LEASE_SECONDS               a Lease not renewed for this long is taken over: 15 (default)
GPUBATCH_TEST_HOOKS                  false (default); true: copy gpubatch.dev/test-* annotations of a
                                     resource onto its pods (the kwok test cluster scripts pods with
                                     them). Never on in production: the chart leaves it off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gpubatch_jobs.contract import DEVICE_POLICIES
from gpubatch_jobs.spec import parse_duration

VERSION_TAG = "0.1.0"
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


@dataclass(frozen=True)
class Settings:
    """Typed operator settings; see the module docstring for each variable."""

    watch_namespaces: tuple[str, ...] = ()
    gpu_image: str = f"gpubatch/gpubatch-gpu:{VERSION_TAG}"
    cpu_image: str = f"gpubatch/gpubatch-cpu:{VERSION_TAG}"
    image_pull_policy: str = "IfNotPresent"
    allowed_images: tuple[str, ...] = ()
    allow_tolerate_all: bool = False
    job_cluster_role: str = "gpubatch-job"
    spark_driver_cluster_role: str = "gpubatch-spark-driver"
    default_device_policy: str = "auto"
    default_gpu_pending_timeout: str = "5m"
    default_termination_grace_s: int = 60
    job_service_account: str = "gpubatch-job"
    spark_driver_service_account: str = "gpubatch-spark-driver"
    job_service_account_annotations: tuple[tuple[str, str], ...] = ()
    gpu_resource: str = "nvidia.com/gpu"
    metrics_port: int = 8080
    health_port: int = 8081
    peering: str = ""
    reconcile_workers: int = 16
    progress_interval_s: float = 5.0
    log_level: str = "INFO"
    test_hooks: bool = False
    leader_election: bool = False
    leader_election_namespace: str = "default"
    leader_election_lease: str = "gpubatch-operator"
    lease_s: float = 15.0

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @property
    def image_allow_list(self) -> tuple[str, ...]:
        """GPUBATCH_ALLOWED_IMAGES, else the repositories of the operator's own two job images."""
        return self.allowed_images or tuple(dict.fromkeys(repository(i) for i in (self.gpu_image, self.cpu_image)))

    @property
    def standalone(self) -> bool:
        return not self.peering

    @property
    def default_gpu_pending_timeout_s(self) -> float:
        return parse_duration(self.default_gpu_pending_timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every GPUBATCH_* variable (unset or empty: the default)."""
        env = os.environ if env is None else env
        defaults = cls()

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = text(name, default)
            if value not in allowed:
                raise SettingsError(f"{name}={value!r}: must be one of {', '.join(allowed)}")
            return value

        def number(name: str, default: float, kind: type = int, minimum: float = 0) -> float:
            raw = text(name, str(default))
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r}: must be a number (e.g. {default})") from None
            if value < minimum:
                raise SettingsError(f"{name}={raw!r}: must be >= {minimum}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = text(name, str(default).lower()).lower()
            if raw not in BOOLEANS:
                raise SettingsError(f"{name}={raw!r}: must be true or false")
            return BOOLEANS[raw]

        timeout = text("GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT", defaults.default_gpu_pending_timeout)
        try:
            if parse_duration(timeout) <= 0:
                raise ValueError("must be positive")
        except ValueError as err:
            raise SettingsError(
                f"GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT={timeout!r}: {err} (e.g. 30s, 5m)"
            ) from None
        namespaces = tuple(
            dict.fromkeys(n.strip() for n in env.get("GPUBATCH_WATCH_NAMESPACES", "").split(",") if n.strip())
        )
        return cls(
            watch_namespaces=namespaces,
            gpu_image=text("GPUBATCH_GPU_IMAGE", defaults.gpu_image),
            cpu_image=text("GPUBATCH_CPU_IMAGE", defaults.cpu_image),
            allowed_images=tuple(
                dict.fromkeys(i.strip() for i in env.get("GPUBATCH_ALLOWED_IMAGES", "").split(",") if i.strip())
            ),
            allow_tolerate_all=flag("GPUBATCH_ALLOW_TOLERATE_ALL", defaults.allow_tolerate_all),
            job_cluster_role=text("GPUBATCH_JOB_CLUSTER_ROLE", defaults.job_cluster_role),
            spark_driver_cluster_role=text("GPUBATCH_SPARK_DRIVER_CLUSTER_ROLE", defaults.spark_driver_cluster_role),
            image_pull_policy=choice("GPUBATCH_IMAGE_PULL_POLICY", defaults.image_pull_policy, PULL_POLICIES),
            default_device_policy=choice(
                "GPUBATCH_DEFAULT_DEVICE_POLICY", defaults.default_device_policy, DEVICE_POLICIES
            ),
            default_gpu_pending_timeout=timeout,
            default_termination_grace_s=int(number("GPUBATCH_DEFAULT_TERMINATION_GRACE_SECONDS",
                                                   defaults.default_termination_grace_s, minimum=1)),
            job_service_account=text("GPUBATCH_JOB_SERVICE_ACCOUNT", defaults.job_service_account),
            spark_driver_service_account=text("GPUBATCH_SPARK_DRIVER_SERVICE_ACCOUNT",
                                              defaults.spark_driver_service_account),
            job_service_account_annotations=_annotations(env, "GPUBATCH_JOB_SERVICE_ACCOUNT_ANNOTATIONS"),
            gpu_resource=text("GPUBATCH_GPU_RESOURCE", defaults.gpu_resource),
            metrics_port=int(number("GPUBATCH_METRICS_PORT", defaults.metrics_port)),
            health_port=int(number("GPUBATCH_HEALTH_PORT", defaults.health_port)),
            peering=text("GPUBATCH_PEERING", defaults.peering),
            reconcile_workers=int(number("GPUBATCH_RECONCILE_WORKERS", defaults.reconcile_workers, minimum=1)),
            progress_interval_s=float(
                number("GPUBATCH_PROGRESS_INTERVAL", defaults.progress_interval_s, float, minimum=0)
            ),
            log_level=choice("GPUBATCH_LOG_LEVEL", defaults.log_level, LOG_LEVELS),
            test_hooks=flag("GPUBATCH_TEST_HOOKS", defaults.test_hooks),
            leader_election=flag("GPUBATCH_LEADER_ELECTION", defaults.leader_election),
            leader_election_namespace=text(
                "GPUBATCH_LEADER_ELECTION_NAMESPACE",
                env.get("POD_NAMESPACE", "").strip() or (namespaces[0] if namespaces else "default"),
            ),
            leader_election_lease=text("GPUBATCH_LEADER_ELECTION_LEASE", defaults.leader_election_lease),
            lease_s=float(number("GPUBATCH_LEASE_SECONDS", defaults.lease_s, float, minimum=3)),
        )


def repository(image: str) -> str:
    """`reg:5000/a/b:tag@sha256:...` -> `reg:5000/a/b`."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _annotations(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise SettingsError(f"{name}: not JSON ({err}); give an object such as {{\"key\": \"value\"}}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SettingsError(f"{name}: must be a JSON object of string values")
    return tuple(sorted((str(k), v) for k, v in value.items()))

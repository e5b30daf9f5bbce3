"""The gpubatch API (group gpubatch.dev, version v1alpha1) as pydantic models.

These models are the single source of truth: the CRD YAML under
charts/gpubatch/crds is generated from them, the operator validates with them,
and the engine in the pod parses the spec it is handed with the same classes.
Only pydantic is imported here, so the operator can use the API without any
ML framework.
"""

from gpubatch_jobs.spec.common import (
    API_GROUP,
    API_VERSION,
    Condition,
    ConditionStatus,
    DevicePolicy,
    DeviceSpec,
    ImageSpec,
    InputFormat,
    InputSpec,
    JobPhase,
    OutputSpec,
    Toleration,
    parse_duration,
)
from gpubatch_jobs.spec.errors import SpecError, format_validation_error
from gpubatch_jobs.spec.kinds import (
    GpubatchResource,
    JobStatus,
    PredictJob,
    PredictJobSpec,
    RenderJob,
    RenderJobSpec,
    SparkSpec,
    TrainJob,
    TrainJobSpec,
    TrainModelSpec,
)
from gpubatch_jobs.spec.manifest import load_manifest, parse_manifest, parse_spec

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "Condition",
    "ConditionStatus",
    "DevicePolicy",
    "DeviceSpec",
    "GpubatchResource",
    "ImageSpec",
    "InputFormat",
    "InputSpec",
    "JobPhase",
    "JobStatus",
    "OutputSpec",
    "PredictJob",
    "PredictJobSpec",
    "RenderJob",
    "RenderJobSpec",
    "SparkSpec",
    "SpecError",
    "Toleration",
    "TrainJob",
    "TrainJobSpec",
    "TrainModelSpec",
    "format_validation_error",
    "load_manifest",
    "parse_duration",
    "parse_manifest",
    "parse_spec",
]

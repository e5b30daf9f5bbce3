"""What the operator refuses before it makes anything for a resource (docs/security.md).

The CRD's schema and CEL rules refuse most bad specs at admission; these checks
depend on the operator's settings (Helm values), which a CRD cannot see:

- `spec.image` must match the allow-list (Helm `jobImages.allowed`): a tenant
  who may create gpubatch resources must not get a pod on an image of their
  choosing. Reason `ImageNotAllowed`.
- A toleration of every taint (`operator: Exists` without a key) would let a
  job onto nodes the admin keeps for others; allowed only with Helm
  `tolerations.allowTolerateAll`. Reason `TolerationNotAllowed` (the chart's
  ValidatingAdmissionPolicy refuses it at admission too).
- The name must make the Job, its Indexed pods' host names and a worker
  group's Service (also a CEL rule on the CRD). Reason `InvalidName`.

`refusal()` is pure; the reconciler fails the resource at once with its
reason and message (a condition, an Event, `Failed`), and no Job is made.
Messages quote what the tenant wrote only as a short, printable excerpt.
"""

from __future__ import annotations

import re

from gpubatch_jobs.contract import (
    IMAGE_NOT_ALLOWED,
    INVALID_NAME,
    RESOURCE_NAME_PATTERN,
    TOLERATION_NOT_ALLOWED,
)
from gpubatch_jobs.errors import excerpt
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_operator.settings import Settings


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """`REPO` allows REPO, REPO:TAG, REPO@DIGEST and REPO:TAG@DIGEST; `PREFIX/*` anything under PREFIX/."""
    for entry in allowed:
        if entry.endswith("/*"):
            if image.startswith(entry[:-1]) and len(image) > len(entry) - 1:
                return True
        elif image == entry or image.startswith((entry + ":", entry + "@")):
            return True
    return False


def refusal(name: str, spec: CommonSpec, settings: Settings) -> tuple[str, str] | None:
    """(reason, message) when the resource must fail at once, else None."""
    if not re.fullmatch(RESOURCE_NAME_PATTERN, name):
        return INVALID_NAME, (f"metadata.name {excerpt(name)} cannot name the Job and its pods: start with a "
                              "lowercase letter and use only lowercase letters, digits and '-'")
    allowed = settings.image_allow_list
    for field in ("gpu", "cpu"):
        image = getattr(spec.image, field, None) if spec.image is not None else None
        if image and not image_allowed(image, allowed):
            return IMAGE_NOT_ALLOWED, (f"spec.image.{field} {excerpt(image)} is not on the operator's allow-list "
                                       f"({', '.join(allowed)}); use one of those or ask the cluster admin "
                                       "to add it (Helm jobImages.allowed)")
    if not settings.allow_tolerate_all:
        for index, toleration in enumerate(spec.tolerations or []):
            if toleration.operator == "Exists" and not toleration.key:
                return TOLERATION_NOT_ALLOWED, (
                    f"spec.tolerations[{index}] tolerates every taint (operator Exists without a key); name the "
                    "taint's key, or ask the cluster admin to allow it (Helm tolerations.allowTolerateAll)")
    return None

"""Reading manifests: a YAML file (possibly several documents) or a bare spec.

`gpubatch run FILE.yaml` and the operator use `parse_manifest`; the pod's
entrypoint, which is handed only the spec as JSON, uses `parse_spec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_jobs.spec.errors import SpecError, format_validation_error
from gpubatch_jobs.spec.kinds import KINDS, GpubatchResource, kind_for, spec_class


def parse_manifest(document: Any, source: str = "manifest") -> GpubatchResource:
    """Validate one manifest document (already parsed from YAML/JSON)."""
    if not isinstance(document, dict):
        raise SpecError(source, ["(document): must be a mapping with apiVersion, kind, metadata, spec"])
    kind = document.get("kind")
    if kind not in KINDS:
        raise SpecError(source, [f"kind: must be one of: {', '.join(KINDS)} (got {kind!r})"])
    try:
        return KINDS[kind].model_validate(document)
    except ValidationError as err:
        raise format_validation_error(err, source) from None


def parse_spec(kind: str, spec: dict[str, Any] | str, source: str = "spec") -> CommonSpec:
    """Validate a bare spec (a dict or its JSON text) for `kind`."""
    try:
        model = spec_class(kind_for(kind).__name__)
    except KeyError as err:
        raise SpecError(source, [str(err.args[0])]) from None
    try:
        if isinstance(spec, str):
            return model.model_validate_json(spec)
        return model.model_validate(spec)
    except ValidationError as err:
        raise format_validation_error(err, source, prefix="spec") from None


def load_manifest(path: str | Path) -> GpubatchResource:
    """Read a manifest file holding exactly one gpubatch resource."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(str(path), [f"cannot read the file: {err.strerror}"]) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise SpecError(str(path), [f"not valid YAML: {err}"]) from None
    ours = [d for d in documents if isinstance(d, dict) and d.get("kind") in KINDS]
    if len(ours) != 1:
        raise SpecError(
            str(path),
            [f"(document): expected exactly one of {', '.join(KINDS)} in the file, found {len(ours)}"],
        )
    return parse_manifest(ours[0], str(path))

"""Reading manifests: a YAML file (possibly several documents) or a bare spec.

`gpubatch run FILE.yaml` and the operator use `parse_manifest`; the pod's
entrypoint, which is handed only the spec as JSON, uses `parse_spec`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpubatch_jobs import kinds as registry  # read at call time: the registry imports this package
from gpubatch_jobs.spec.common import CommonSpec
from gpubatch_jobs.spec.errors import SpecError, format_validation_error
from gpubatch_jobs.spec.kinds import GpubatchResource


def parse_manifest(document: Any, source: str = "manifest") -> GpubatchResource:
    """Validate one manifest document (already parsed from YAML/JSON)."""
    if not isinstance(document, dict):
        raise SpecError(source, ["(document): must be a mapping with apiVersion, kind, metadata, spec"])
    kind = document.get("kind")
    plugin = registry.KINDS.get(kind) if isinstance(kind, str) else None
    if plugin is None:
        raise SpecError(source, [describe_kind(kind)])
    try:
        return plugin.model.model_validate(document)
    except ValidationError as err:
        error = format_validation_error(err, source)
        error.kind = kind
        raise error from None


def describe_kind(kind: Any) -> str:
    """`kind: 'Trainjob' is not one of ...; did you mean TrainJob?`"""
    line = f"kind: {kind!r} is not one of {', '.join(registry.KINDS)}"
    if isinstance(kind, str) and kind:
        folded = {name.lower(): name for name in registry.KINDS}
        close = folded.get(kind.lower()) or folded.get(kind.lower().rstrip("s"))
        if close is None:
            matches = difflib.get_close_matches(kind.lower(), list(folded), n=1, cutoff=0.6)
            close = folded[matches[0]] if matches else None
        if close is not None:
            return f"{line}; did you mean {close}?"
    return f"{line}; set kind to the resource this file describes"


def parse_spec(kind: str, spec: dict[str, Any] | str, source: str = "spec") -> CommonSpec:
    """Validate a bare spec (a dict or its JSON text) for `kind`."""
    try:
        model = registry.find(kind).spec
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
    ours = [d for d in documents if isinstance(d, dict) and d.get("kind") in registry.KINDS]
    if not ours:
        kinds = [d.get("kind") if isinstance(d, dict) else None for d in documents]
        if not kinds:
            raise SpecError(str(path), ["(document): the file is empty; expected one of "
                                        f"{', '.join(registry.KINDS)}"])
        raise SpecError(str(path), [describe_kind(kind) for kind in kinds])
    if len(ours) > 1:
        raise SpecError(
            str(path),
            [f"(document): expected exactly one of {', '.join(registry.KINDS)} in the file, found {len(ours)}; "
             "put each job in a file of its own"],
        )
    return parse_manifest(ours[0], str(path))

"""Readable validation errors: the field path at fault and what is allowed.

pydantic reports `('spec', 'device', 'gpus')` and "Input should be greater
than or equal to 1"; users of kubectl expect `spec.device.gpus: must be >= 1`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gpubatch_jobs.spec.common import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    PATH_PATTERN,
    QUANTITY_PATTERN,
)

_PATTERN_HINTS = {
    DURATION_PATTERN: "must be a duration such as 30s, 5m or 1h30m",
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 500m, 2 or 8Gi",
    DNS_LABEL_PATTERN: "must be a DNS label: lowercase letters, digits and '-'",
    PATH_PATTERN: "must be a local path, pvc://CLAIM/sub/path, s3://BUCKET/KEY, gs://BUCKET/OBJECT or az://CONTAINER/BLOB "
                  "(CONTAINER: 3-63 lowercase letters, digits and '-')",
    DNS_SUBDOMAIN_PATTERN: "must be a Kubernetes object name: lowercase letters, digits, '-' and '.'",
}


class SpecError(ValueError):
    """A manifest or spec that does not validate; `problems` holds one line per field."""

    def __init__(self, source: str, problems: list[str], kind: str | None = None) -> None:
        self.source = source
        self.problems = problems
        self.kind = kind  # the resource's kind when it was known (for the failure summary)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid manifest\n{lines}")


_UNION_TAGS = {"int", "str", "float", "bool"}


def _is_union_tag(item: str) -> bool:
    """Names pydantic adds to `loc` for the branches of a union: `int`, `constrained-str`, `literal['auto']`."""
    return item in _UNION_TAGS or "[" in item or item.startswith(("constrained-", "function-"))


def _field_path(loc: tuple[Any, ...], prefix: str) -> str:
    parts: list[str] = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"[{item}]")
        elif not _is_union_tag(str(item)):
            parts.append(str(item))
    return ".".join(parts) or "(document)"


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against `kubectl explain` or the README"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}{shown}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}{shown}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}{shown}"
    if kind == "less_than":
        return f"must be < {ctx['lt']}{shown}"
    if kind in ("literal_error", "enum"):
        return f"must be one of: {ctx.get('expected', '')}{shown}"
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(ctx["pattern"], f"must match the pattern {ctx['pattern']}")
        return f"{hint}{shown}"
    if kind == "string_too_short":
        return f"must not be empty{shown}" if ctx.get("min_length") == 1 else f"must have at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must have at most {ctx['max_length']} characters"
    if kind in ("too_short", "too_long"):
        return error["msg"].replace("List", "list")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer{shown}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{shown}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{shown}"
    if kind in ("string_type",):
        return f"must be a string{shown}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (an object){shown}"
    if kind == "list_type":
        return f"must be a list{shown}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg']}{shown}"


def format_validation_error(err: ValidationError, source: str = "manifest", prefix: str = "") -> SpecError:
    """Turn a pydantic ValidationError into a SpecError with one line per field.

    A union such as `batchSize: auto | N` yields one error per branch; they are
    merged so the user reads a single line that names both choices.
    """
    by_path: dict[str, list[Any]] = {}
    for error in err.errors():
        by_path.setdefault(_field_path(tuple(error["loc"]), prefix), []).append(error)
    problems = []
    for path, errors in by_path.items():
        if len(errors) > 1 and any(e["type"] == "literal_error" for e in errors):
            others = [_describe(e) for e in errors if e["type"] != "literal_error"]
            literal = next(e for e in errors if e["type"] == "literal_error")
            problems.append(f"{path}: must be {literal['ctx']['expected']} or a value that {'; '.join(others).replace('must be', 'is')}")
        else:
            problems.append(f"{path}: {'; '.join(dict.fromkeys(_describe(e) for e in errors))}")
    return SpecError(source, problems)

"""Generate the CustomResourceDefinitions from the pydantic models.

The models are the single source of truth; this module turns their JSON
schema into the structural OpenAPI v3 schema Kubernetes wants: references
inlined, `Optional[X]` reduced to `X`, `auto | N` fields made int-or-string
with a CEL rule, numeric exclusive bounds rewritten in OpenAPI 3.0 form, and
pydantic-only keys (titles) dropped. `gpubatch crds --check` compares the
result with the committed YAML so the two never drift.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from gpubatch_jobs.contract import RESOURCE_NAME_PATTERN
from gpubatch_jobs.kinds import KINDS, find
from gpubatch_jobs.spec import API_GROUP, API_VERSION
from gpubatch_jobs.spec.kinds import JobStatus

CATEGORY = "gpubatch"
DEFAULT_DIR = Path("charts/gpubatch/crds")

_DROP_KEYS = {"title"}
_KEEP_KEYS = {
    "type", "properties", "required", "items", "additionalProperties", "enum", "default",
    "description", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "minItems", "maxItems", "maxProperties", "format", "nullable",
    "x-kubernetes-validations", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "anyOf", "x-kubernetes-list-type", "x-kubernetes-map-type",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)
            return _resolve(target, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _int_or_auto(branches: list[dict[str, Any]], outer: dict[str, Any]) -> dict[str, Any]:
    words = [b.get("const") or (b.get("enum") or [None])[0] for b in branches if b.get("type") == "string"]
    number = next(b for b in branches if b.get("type") == "integer")
    checks = []
    if "minimum" in number:
        checks.append(f"self >= {number['minimum']}")
    if "maximum" in number:
        checks.append(f"self <= {number['maximum']}")
    allowed = " || ".join(f"self == '{w}'" for w in words)
    rule = f"type(self) == string ? ({allowed}) : ({' && '.join(checks) or 'true'})"
    bounds = f"between {number.get('minimum', '-inf')} and {number.get('maximum', 'inf')}"
    schema: dict[str, Any] = {
        "x-kubernetes-int-or-string": True,
        "x-kubernetes-validations": [
            {"rule": rule, "message": f"must be {' or '.join(repr(w) for w in words)} or an integer {bounds}"}
        ],
    }
    for key in ("description", "default"):
        if key in outer:
            schema[key] = outer[key]
    return schema


def _quantity(branches: list[dict[str, Any]], outer: dict[str, Any]) -> dict[str, Any]:
    pattern = next(b["pattern"] for b in branches if b.get("type") == "string")
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": pattern,
        # The pattern refuses a negative string (it applies to strings only), `minimum` a negative
        # integer (it applies to numbers only). No CEL rule: the API server prices one on an
        # int-or-string value beyond its budget.
        "minimum": 0,
        "x-kubernetes-int-or-string": True,
    }


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one resolved JSON-schema node into a structural OpenAPI schema."""
    node = {k: v for k, v in node.items() if k not in _DROP_KEYS}
    if node.pop("x-gpubatch-operator-default", False):
        node.pop("default", None)
    if "anyOf" in node and "x-kubernetes-int-or-string" not in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            merged = {**branches[0], **{k: v for k, v in outer.items() if k != "default" or v is not None}}
            return _structural(merged)
        else:
            types = {b.get("type") for b in branches}
            if types == {"string", "integer"} and any("pattern" in b for b in branches):
                return _quantity(branches, outer)
            if types == {"string", "integer"}:
                return _int_or_auto(branches, outer)
            raise ValueError(f"cannot express this union in a structural schema: {node}")
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[plain] = node[bound]
            node[bound] = True
    if "properties" in node:
        node["type"] = "object"
        node["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    elif node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
        node.setdefault("type", "object")
    elif node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if "items" in node:
        node["items"] = _structural(node["items"])
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    unknown = set(node) - _KEEP_KEYS
    if unknown:
        raise ValueError(f"schema keys with no structural equivalent: {sorted(unknown)} in {node}")
    return node


def openapi_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    resolved = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    return _structural(resolved)


def _status_schema() -> dict[str, Any]:
    schema = openapi_schema(JobStatus)
    schema["x-kubernetes-preserve-unknown-fields"] = True
    schema["properties"]["result"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "The engine's summary JSON (throughput, batch size used, device, metrics).",
    }
    schema["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    schema["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return schema


# The resource's name becomes its Job's name (NAME-render), the Indexed pods' host names
# (NAME-train-0) and a worker group's Service (NAME-workers, a DNS-1035 label): a name with a
# dot or a leading digit would pass here and fail there, after the resource was accepted.
NAME_RULE = {
    "rule": f"self.metadata.name.matches('{RESOURCE_NAME_PATTERN}')",
    "message": ("metadata.name must start with a lowercase letter and hold only lowercase letters, digits "
                "and '-' (it names the Job, its pods' host names and a worker group's Service)"),
}


def crd_for(kind: str) -> dict[str, Any]:
    """The CRD of a kind in the plug-in registry (gpubatch_jobs/kinds/)."""
    plugin = find(kind)
    kind, info = plugin.kind, plugin.info
    spec_schema = openapi_schema(plugin.spec)
    status_schema = _status_schema()
    status_schema["properties"]["conditions"].pop("x-kubernetes-list-map-keys")
    status_schema["properties"]["conditions"]["x-kubernetes-list-type"] = "atomic"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "gpubatch"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": [info.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Device", "type": "string", "jsonPath": ".status.device"},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                        {"name": "Preempted", "type": "integer", "jsonPath": ".status.preemptions",
                         "description": "Times a pod was stopped by SIGTERM and saved its work first"},
                        {"name": "ETA(s)", "type": "integer", "jsonPath": ".status.estimatedRemainingSeconds"},
                        {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        # Why it waits (Kueue, the scheduler, GPU nodes), how it ended: one line.
                        {"name": "Message", "type": "string", "jsonPath": ".status.message"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{kind}: {(plugin.spec.__doc__ or kind).strip().splitlines()[0]}",
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `gpubatch crds` from gpubatch_jobs.spec; do not edit by hand.\n"


def render_yaml(kind: str) -> str:
    return HEADER + yaml.safe_dump(crd_for(kind), sort_keys=False, width=120)


def write_crds(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = directory / f"{kind.lower()}.yaml"
        path.write_text(render_yaml(kind))
        written.append(path)
    return written


def check_crds(directory: Path = DEFAULT_DIR) -> list[str]:
    """Names of the CRD files that are missing or differ from the models."""
    stale = []
    for kind in KINDS:
        path = directory / f"{kind.lower()}.yaml"
        if not path.exists() or path.read_text() != render_yaml(kind):
            stale.append(str(path))
    return stale

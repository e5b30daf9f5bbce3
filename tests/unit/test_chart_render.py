"""The chart renders what the operator and PodSecurity `restricted` expect.

The Deployment's environment is read back through the operator's own
`Settings.from_env`, so a renamed variable or a value the operator rejects
fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
import yaml

from gpubatch_operator.settings import Settings
from tests.unit.test_chart_support import CHART_DIR, find, helm, render


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def settings_of(objects: list[dict[str, Any]]) -> Settings:
    env = {item["name"]: item["value"] for item in operator_container(objects)["env"] if "value" in item}
    return Settings.from_env(env)


def test_defaults_give_the_operators_own_defaults() -> None:
    settings = settings_of(render())
    # Chart defaults and operator defaults agree, except that the chart runs two replicas with
    # leader election (a lone `gpubatch-operator` needs none) on a Lease named after the release.
    assert settings.leader_election and settings.leader_election_lease == "rel-gpubatch"
    # The job ClusterRoles are named after the release too; the allow-list is spelt out, and it is
    # exactly the operator's own default (the repositories of its two job images).
    assert (settings.job_cluster_role, settings.spark_driver_cluster_role) == ("rel-gpubatch-job",
                                                                               "rel-gpubatch-spark-driver")
    assert settings.allowed_images == Settings().image_allow_list
    assert replace(settings, leader_election=False, leader_election_lease=Settings().leader_election_lease,
                   job_cluster_role=Settings().job_cluster_role, allowed_images=(),
                   spark_driver_cluster_role=Settings().spark_driver_cluster_role) == Settings()
    assert settings.clusterwide and not settings.test_hooks


def test_values_reach_the_operator_settings() -> None:
    settings = settings_of(render(
        "watchNamespaces={team-a,team-b}", "jobImages.gpu.repository=reg.example/gb-gpu", "jobImages.gpu.tag=1.2",
        "jobImages.cpu.tag=1.3", "jobImages.pullPolicy=Always", "defaults.devicePolicy=cpu",
        "defaults.gpuPendingTimeout=1h30m", "jobServiceAccount.name=runner", "gpuResource=amd.com/gpu",
        "metrics.port=9090", "health.port=9091", "logLevel=DEBUG",
    ))
    assert settings.watch_namespaces == ("team-a", "team-b")
    assert settings.gpu_image == "reg.example/gb-gpu:1.2"
    assert settings.cpu_image == "gpubatch/gpubatch-cpu:1.3"
    assert settings.image_pull_policy == "Always"
    assert settings.default_device_policy == "cpu"
    assert settings.default_gpu_pending_timeout_s == 5400
    assert settings.job_service_account == "runner"
    assert settings.gpu_resource == "amd.com/gpu"
    assert (settings.metrics_port, settings.health_port, settings.log_level) == (9090, 9091, "DEBUG")


def test_metrics_disabled_turns_the_endpoint_and_service_off() -> None:
    objects = render("metrics.enabled=false")
    assert settings_of(objects).metrics_port == 0
    assert not find(objects, "Service")
    assert [port["name"] for port in operator_container(objects)["ports"]] == ["health"]


def test_the_pod_passes_podsecurity_restricted() -> None:
    objects = render()
    (deployment,) = find(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert [mount["mountPath"] for mount in container["volumeMounts"]] == ["/tmp"]


def test_the_operator_container_is_probed_and_bounded() -> None:
    container = operator_container(render("health.port=9000"))
    assert container["command"] == ["gpubatch-operator"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 9000}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]


def test_one_active_operator_at_a_time() -> None:
    (deployment,) = find(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    (alone,) = find(render("leaderElection.enabled=false", "replicas=1"), "Deployment")
    assert alone["spec"]["replicas"] == 1 and alone["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(AssertionError, match="replicas > 1 needs leaderElection.enabled"):
        render("leaderElection.enabled=false")


def test_a_settings_change_rolls_the_pod() -> None:
    def checksum(*values: str) -> str:
        (deployment,) = find(render(*values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]

    assert checksum() == checksum()
    assert checksum() != checksum("defaults.devicePolicy=gpu")


def test_job_service_account_is_pre_created_where_jobs_will_run() -> None:
    def namespaces(*values: str) -> list[str]:
        return sorted(obj["metadata"]["namespace"] for obj in find(render(*values), "ServiceAccount", "gpubatch-job"))

    assert namespaces() == ["gpubatch-system"]
    assert namespaces("watchNamespaces={a,b}") == ["a", "b"]
    assert namespaces("watchNamespaces={a}", "jobServiceAccount.namespaces={a,c}") == ["a", "c"]
    assert namespaces("jobServiceAccount.create=false") == []


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objects = render("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom")
    (monitor,) = find(objects, "ServiceMonitor")
    (service,) = find(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert not find(render(), "ServiceMonitor")


@pytest.mark.parametrize(("value", "complaint"), [
    ("imag.tag=x", "additional properties 'imag'"),
    ("image.pullpolicy=Always", "additional properties 'pullpolicy'"),
    ("defaults.devicePolicy=gpus", "value must be one of"),
    ("defaults.gpuPendingTimeout=5 minutes", "does not match pattern"),
    ("watchNamespaces={Team_A}", "does not match pattern"),
    ("metrics.port=0", "minimum"),
    ("jobImages.pullPolicy=Sometimes", "value must be one of"),
    ("logLevel=TRACE", "value must be one of"),
    ("rbac.create=maybe", "got string, want boolean"),
])
def test_the_schema_rejects_typos_and_bad_values(value: str, complaint: str) -> None:
    result = helm("template", "rel", str(CHART_DIR), "--set", value)
    assert result.returncode != 0, f"--set {value} was accepted"
    assert complaint in result.stderr, result.stderr


def test_service_monitor_without_metrics_is_refused() -> None:
    result = helm("template", "rel", str(CHART_DIR), "--set", "serviceMonitor.enabled=true",
                  "--set", "metrics.enabled=false")
    assert result.returncode != 0 and "needs metrics.enabled" in result.stderr


def test_chart_lints_strictly() -> None:
    result = helm("lint", "--strict", str(CHART_DIR))
    assert result.returncode == 0, result.stdout + result.stderr


# --- values.yaml and values.schema.json say the same --------------------------------------------

VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [path for key, sub in values.items() for path in leaf_paths(sub, (*prefix, key))]
    return [prefix]


def schema_at(path: tuple[str, ...]) -> dict[str, Any] | None:
    node: dict[str, Any] = SCHEMA
    for key in path:
        props = node.get("properties")
        if props is None:  # a free-form object (resources, securityContext...): no deeper schema
            return node
        if key not in props:
            return None
        node = props[key]
    return node


def test_every_value_has_a_schema() -> None:
    missing = [".".join(path) for path in leaf_paths(yaml.safe_load(VALUES_TEXT)) if schema_at(path) is None]
    assert not missing, f"values without a schema: {missing}"


def test_the_schema_closes_every_level_it_defines() -> None:
    def open_levels(node: dict[str, Any], where: str) -> list[str]:
        found = [] if "properties" not in node or node.get("additionalProperties") is False else [where]
        for key, sub in node.get("properties", {}).items():
            found += open_levels(sub, f"{where}.{key}")
        return found

    assert open_levels(SCHEMA, "values") == []


def test_every_value_is_documented() -> None:
    """Each key at a level the schema defines has a comment right above it (free-form maps excepted)."""
    lines = VALUES_TEXT.splitlines()
    undocumented, parents = [], []  # parents: (indent, key) of the enclosing keys
    for index, line in enumerate(lines):
        key = re.match(r"^( *)([A-Za-z]\w*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        parents = [(i, k) for i, k in parents if i < indent]
        path = (*(k for _, k in parents), key.group(2))
        parent_schema = schema_at(path[:-1])
        defined_level = parent_schema is not None and key.group(2) in parent_schema.get("properties", {})
        if defined_level and not lines[index - 1].lstrip().startswith("#"):
            undocumented.append(".".join(path))
        parents.append((indent, key.group(2)))
    assert not undocumented, f"values.yaml keys without a comment above them: {undocumented}"

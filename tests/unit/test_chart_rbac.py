"""The chart grants exactly the access the operator's code declares, no wildcard, and no more.

gpubatch_operator.rbac lists what the operator uses (its own tests check the
code against it); the chart's ClusterRole/Roles must say the same, in both
modes. The operator holds no pod writes and no Roles: it grants the job
identities their rights by binding the chart's two job ClusterRoles, whose
rules must equal gpubatch_operator.builders.rbac's, and on which alone it holds
`bind`. The ValidatingAdmissionPolicies that hold the job identities to their
own pods are rendered with the right identities and images.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpubatch_operator.builders.rbac import JOB_POD_RULES, SPARK_DRIVER_RULES
from gpubatch_operator.rbac import (
    OPERATOR_CLUSTER_RBAC,
    OPERATOR_LEASE_RBAC,
    OPERATOR_RBAC,
    as_named_rules,
    as_rules,
    operator_cluster_named_rbac,
    operator_named_rbac,
)
from gpubatch_operator.settings import Settings
from tests.unit.test_chart_support import find, render

Grants = dict[tuple[str, str, tuple[str, ...]], frozenset[str]]

# What the chart's env gives the operator for release "rel" (fullname rel-gpubatch).
CHART_SETTINGS = Settings(job_cluster_role="rel-gpubatch-job", spark_driver_cluster_role="rel-gpubatch-spark-driver")


def grants(rules: list[dict[str, Any]]) -> Grants:
    """{(apiGroup, resource, resourceNames): verbs}, however the rules are grouped."""
    out: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for rule in rules:
        names = tuple(sorted(rule.get("resourceNames") or ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource, names), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in out.items()}


def operator_rbac(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's ClusterRole/Roles on the jobs (the leader-election Role aside)."""
    return [obj for obj in objects if obj["kind"] in {"ClusterRole", "Role"}
            and obj["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
            and not obj["metadata"]["name"].endswith("-leader-election")]


def test_leader_election_has_a_role_on_leases_in_the_release_namespace_only() -> None:
    objects = render()
    (role,) = [obj for obj in objects if obj["kind"] == "Role" and obj["metadata"]["name"].endswith("-leader-election")]
    assert grants(role["rules"]) == grants(as_rules(OPERATOR_LEASE_RBAC))
    assert not [obj for obj in render("leaderElection.enabled=false", "replicas=1")
                if obj["metadata"]["name"].endswith("-leader-election")]


NAMESPACED = grants(as_rules(OPERATOR_RBAC) + as_named_rules(operator_named_rbac(CHART_SETTINGS)))
CLUSTER_SCOPED = grants(as_rules(OPERATOR_CLUSTER_RBAC) + as_named_rules(operator_cluster_named_rbac(CHART_SETTINGS)))


def test_cluster_wide_the_clusterrole_is_the_operators_list() -> None:
    objects = operator_rbac(render())
    assert [obj["kind"] for obj in objects] == ["ClusterRole"]
    merged = {key: NAMESPACED.get(key, frozenset()) | CLUSTER_SCOPED.get(key, frozenset())
              for key in {*NAMESPACED, *CLUSTER_SCOPED}}
    assert grants(objects[0]["rules"]) == merged


def test_per_namespace_a_role_each_and_a_clusterrole_for_cluster_scoped_reads() -> None:
    objects = operator_rbac(render("watchNamespaces={team-a,team-b}"))
    roles = {obj["metadata"]["namespace"]: obj for obj in objects if obj["kind"] == "Role"}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert grants(role["rules"]) == NAMESPACED  # bind included: it is checked in the binding's namespace
    (clusterrole,) = [obj for obj in objects if obj["kind"] == "ClusterRole"]
    assert grants(clusterrole["rules"]) == CLUSTER_SCOPED


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a,team-b}",)])
def test_the_operator_holds_no_pod_writes_no_roles_and_binds_only_the_job_cluster_roles(values: tuple[str, ...]) -> None:
    for obj in operator_rbac(render(*values)):
        for (_group, resource, names), verbs in grants(obj["rules"]).items():
            if resource == "pods":
                assert verbs <= {"get", "list", "watch"}, obj
            assert resource not in {"roles", "clusterrolebindings", "secrets", "configmaps", "pods/exec"}, obj
            assert "escalate" not in verbs and "impersonate" not in verbs
            if "bind" in verbs or resource == "clusterroles":
                assert names == ("rel-gpubatch-job", "rel-gpubatch-spark-driver"), obj
            if "delete" in verbs and resource in {"serviceaccounts", "rolebindings"}:
                assert names == ("gpubatch-job", "gpubatch-spark-driver"), obj


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a}",), ("jobServiceAccount.namespaces={x,y}",)])
def test_job_cluster_roles_equal_what_the_operator_binds(values: tuple[str, ...]) -> None:
    objects = render(*values)
    (job,) = find(objects, "ClusterRole", "rel-gpubatch-job")
    (driver,) = find(objects, "ClusterRole", "rel-gpubatch-spark-driver")
    assert grants(job["rules"]) == grants(JOB_POD_RULES)
    assert grants(driver["rules"]) == grants(SPARK_DRIVER_RULES)
    assert not find(objects, "Role", Settings().job_service_account)  # no Role: a binding to the ClusterRole
    bindings = find(objects, "RoleBinding", Settings().job_service_account)
    assert bindings
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": "rel-gpubatch-job"}


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a,team-b}",)])
def test_no_rule_uses_a_wildcard_or_a_dangerous_verb(values: tuple[str, ...]) -> None:
    for obj in render(*values):
        if obj["kind"] not in {"ClusterRole", "Role"}:
            continue
        assert "aggregationRule" not in obj
        for rule in obj["rules"]:
            assert "nonResourceURLs" not in rule
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not [item for item in rule.get(field, []) if "*" in item], rule
            assert not {"escalate", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
            if "bind" in rule["verbs"]:  # only on named ClusterRoles
                assert rule["resources"] == ["clusterroles"] and rule.get("resourceNames"), rule


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a,team-b}",)])
def test_bindings_bind_the_roles_to_the_right_service_accounts(values: tuple[str, ...]) -> None:
    objects = render(*values, namespace="ops")
    roles = {(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
             for obj in objects if obj["kind"] in {"ClusterRole", "Role"}}
    bindings = [obj for obj in objects if obj["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    for binding in bindings:
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        assert (ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"]) in roles
        (subject,) = binding["subjects"]
        if binding["metadata"]["labels"]["app.kubernetes.io/component"] == "job":
            assert subject == {"kind": "ServiceAccount", "name": "gpubatch-job", "namespace": namespace}
        else:
            assert subject == {"kind": "ServiceAccount", "name": "rel-gpubatch", "namespace": "ops"}
    # The job ClusterRoles are bound by the operator at run time, not by the chart's operator bindings.
    operator_refs = {b["roleRef"]["name"] for b in bindings if b["metadata"]["labels"]["app.kubernetes.io/component"]
                     == "operator"}
    assert not operator_refs & {"rel-gpubatch-job", "rel-gpubatch-spark-driver"}


def policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ValidatingAdmissionPolicy"}


def test_admission_policies_hold_the_job_identities_to_their_own_pods() -> None:
    objects = render()
    found = policies(objects)
    assert set(found) == {"rel-gpubatch-job-pods", "rel-gpubatch-spark-executor-pods", "rel-gpubatch-job-tolerations"}
    bound = {obj["spec"]["policyName"] for obj in objects if obj["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert bound == set(found)
    job = found["rel-gpubatch-job-pods"]["spec"]
    assert job["matchConditions"][0]["expression"].endswith(":gpubatch-job')")
    assert "authentication.kubernetes.io/pod-name" in job["variables"][0]["expression"]
    assert "gpubatch.dev/progress" in job["validations"][1]["expression"]
    driver = found["rel-gpubatch-spark-executor-pods"]["spec"]
    assert driver["matchConditions"][0]["expression"].endswith(":gpubatch-spark-driver')")
    images = next(v["expression"] for v in driver["validations"] if "allowed job image" in v["message"])
    assert "i.startsWith('gpubatch/gpubatch-cpu:')" in images and "i.startsWith('gpubatch/gpubatch-gpu@')" in images
    assert "automountServiceAccountToken == false" in driver["validations"][3]["expression"]


def test_the_allow_list_reaches_the_operator_and_the_executor_policy() -> None:
    objects = render("jobImages.allowed={registry.example/ml/*,team/image}")
    (deployment,) = find(objects, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GPUBATCH_ALLOWED_IMAGES"] == "registry.example/ml/*,team/image"
    assert env["GPUBATCH_JOB_CLUSTER_ROLE"] == "rel-gpubatch-job"
    assert env["GPUBATCH_ALLOW_TOLERATE_ALL"] == "false"
    images = next(v["expression"] for v in policies(objects)["rel-gpubatch-spark-executor-pods"]["spec"]["validations"]
                  if "allowed job image" in v["message"])
    assert "i.startsWith('registry.example/ml/')" in images and "i == 'team/image'" in images
    assert "gpubatch/gpubatch-cpu" not in images
    assert Settings.from_env({k: v for k, v in env.items() if v is not None}).image_allow_list == (
        "registry.example/ml/*", "team/image")


def test_tolerate_everything_is_refused_at_admission_unless_the_admin_allows_it() -> None:
    assert "rel-gpubatch-job-tolerations" in policies(render())
    assert "rel-gpubatch-job-tolerations" not in policies(render("jobTolerations.allowTolerateAll=true"))


def test_rbac_create_false_renders_no_rbac() -> None:
    kinds = {obj["kind"] for obj in render("rbac.create=false")}
    assert not kinds & {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding", "ValidatingAdmissionPolicy"}
    assert "ServiceAccount" in kinds

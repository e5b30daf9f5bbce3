"""The chart grants exactly the access the operator's code declares, and no wildcard.

gpubatch_operator.rbac lists what the operator uses (its own tests check the
code against it); the chart's ClusterRole/Roles must say the same, in both
modes, and the job pods' Role must equal the one the operator creates.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpubatch_operator.builders.rbac import JOB_POD_RULES
from gpubatch_operator.rbac import (
    OPERATOR_CLUSTER_RBAC,
    OPERATOR_LEASE_RBAC,
    OPERATOR_RBAC,
    as_rules,
)
from gpubatch_operator.settings import Settings
from tests.unit.test_chart_support import find, render

Grants = dict[tuple[str, str], frozenset[str]]


def grants(rules: list[dict[str, Any]]) -> Grants:
    """{(apiGroup, resource): verbs}, however the rules are grouped."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
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


NAMESPACED = grants(as_rules(OPERATOR_RBAC))
CLUSTER_SCOPED = grants(as_rules(OPERATOR_CLUSTER_RBAC))


def test_cluster_wide_the_clusterrole_is_the_operators_list() -> None:
    objects = operator_rbac(render())
    assert [obj["kind"] for obj in objects] == ["ClusterRole"]
    assert grants(objects[0]["rules"]) == {**NAMESPACED, **CLUSTER_SCOPED}


def test_per_namespace_a_role_each_and_a_clusterrole_for_cluster_scoped_reads() -> None:
    objects = operator_rbac(render("watchNamespaces={team-a,team-b}"))
    roles = {obj["metadata"]["namespace"]: obj for obj in objects if obj["kind"] == "Role"}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert grants(role["rules"]) == NAMESPACED
    (clusterrole,) = [obj for obj in objects if obj["kind"] == "ClusterRole"]
    assert grants(clusterrole["rules"]) == CLUSTER_SCOPED


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a}",), ("jobServiceAccount.namespaces={x,y}",)])
def test_job_role_equals_the_one_the_operator_creates(values: tuple[str, ...]) -> None:
    objects = render(*values)
    job_roles = find(objects, "Role", Settings().job_service_account)
    assert job_roles
    for role in job_roles:
        assert grants(role["rules"]) == grants(JOB_POD_RULES)


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a,team-b}",)])
def test_no_rule_uses_a_wildcard_or_a_dangerous_verb(values: tuple[str, ...]) -> None:
    for obj in render(*values):
        if obj["kind"] not in {"ClusterRole", "Role"}:
            continue
        assert "aggregationRule" not in obj
        for rule in obj["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule
            for field in ("apiGroups", "resources", "verbs"):
                assert not [item for item in rule[field] if "*" in item], rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule


@pytest.mark.parametrize("values", [(), ("watchNamespaces={team-a,team-b}",)])
def test_bindings_bind_the_roles_to_the_right_service_accounts(values: tuple[str, ...]) -> None:
    objects = render(*values, namespace="ops")
    roles = {(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
             for obj in objects if obj["kind"] in {"ClusterRole", "Role"}}
    bindings = [obj for obj in objects if obj["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    assert len(bindings) == len(roles)
    for binding in bindings:
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        assert (ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"]) in roles
        (subject,) = binding["subjects"]
        if binding["metadata"]["labels"]["app.kubernetes.io/component"] == "job":
            assert subject == {"kind": "ServiceAccount", "name": "gpubatch-job", "namespace": namespace}
        else:
            assert subject == {"kind": "ServiceAccount", "name": "rel-gpubatch", "namespace": "ops"}


def test_rbac_create_false_renders_no_rbac() -> None:
    kinds = {obj["kind"] for obj in render("rbac.create=false")}
    assert not kinds & {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}
    assert "ServiceAccount" in kinds

"""Settings from the environment, the RBAC list, and the work queue."""

from __future__ import annotations

import asyncio

import pytest

from gpubatch_operator import rbac
from gpubatch_operator.settings import Settings, SettingsError
from gpubatch_operator.workqueue import WorkQueue


def test_defaults():
    settings = Settings.from_env({})
    assert settings.clusterwide and settings.standalone
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)
    assert settings.job_service_account == "gpubatch-job" and settings.gpu_resource == "nvidia.com/gpu"
    assert settings.default_gpu_pending_timeout_s == 300


def test_values_are_read():
    settings = Settings.from_env({
        "GPUBATCH_WATCH_NAMESPACES": " a, b ,a,", "GPUBATCH_DEFAULT_DEVICE_POLICY": "cpu",
        "GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT": "90s", "GPUBATCH_METRICS_PORT": "0",
        "GPUBATCH_GPU_IMAGE": "g:1", "GPUBATCH_PEERING": "gpubatch",
    })
    assert settings.watch_namespaces == ("a", "b") and not settings.clusterwide
    assert settings.default_device_policy == "cpu" and settings.default_gpu_pending_timeout_s == 90
    assert settings.metrics_port == 0 and settings.gpu_image == "g:1" and not settings.standalone


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GPUBATCH_DEFAULT_DEVICE_POLICY", "tpu"),
        ("GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT", "soon"),
        ("GPUBATCH_METRICS_PORT", "eighty"),
        ("GPUBATCH_IMAGE_PULL_POLICY", "Sometimes"),
        ("GPUBATCH_RECONCILE_WORKERS", "0"),
        ("GPUBATCH_TEST_HOOKS", "sometimes"),
        ("GPUBATCH_LEADER_ELECTION", "maybe"),
        ("GPUBATCH_LEASE_SECONDS", "1"),
    ],
)
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_the_test_hook_and_leader_election_are_off_unless_turned_on():
    assert not Settings.from_env({}).test_hooks and not Settings.from_env({}).leader_election
    on = Settings.from_env({"GPUBATCH_TEST_HOOKS": "true", "GPUBATCH_LEADER_ELECTION": "true",
                            "POD_NAMESPACE": "gpubatch-system", "GPUBATCH_LEASE_SECONDS": "6"})
    assert on.test_hooks and on.leader_election and on.lease_s == 6
    assert on.leader_election_namespace == "gpubatch-system"
    assert Settings.from_env({"GPUBATCH_WATCH_NAMESPACES": "a,b"}).leader_election_namespace == "a"


def test_rbac_covers_every_resource_the_operator_touches():
    settings = Settings()
    named = rbac.operator_named_rbac(settings) + rbac.operator_cluster_named_rbac(settings)
    granted = {(g, r) for g, r, _ in rbac.OPERATOR_RBAC + rbac.OPERATOR_CLUSTER_RBAC + rbac.OPERATOR_LEASE_RBAC}
    granted |= {(g, r) for g, r, _, _ in named}
    used = {("batch", "jobs"), ("", "pods"), ("", "events"), ("", "nodes"), ("", "serviceaccounts"),
            ("rbac.authorization.k8s.io", "rolebindings"), ("rbac.authorization.k8s.io", "clusterroles"),
            ("networking.k8s.io", "networkpolicies"), ("", "services"),
            ("gpubatch.dev", "renderjobs/status"), ("gpubatch.dev", "predictjobs"),
            ("apiextensions.k8s.io", "customresourcedefinitions"), ("coordination.k8s.io", "leases")}
    assert used <= granted
    verbs = {(g, r): v for g, r, v in rbac.OPERATOR_RBAC}
    assert "update" not in verbs[("gpubatch.dev", "trainjobs")], "the spec is never written"


def test_the_operator_holds_no_pod_writes_no_roles_and_binds_only_the_two_job_cluster_roles():
    settings = Settings(job_cluster_role="r-job", spark_driver_cluster_role="r-spark")
    verbs = {(g, r): v for g, r, v in rbac.OPERATOR_RBAC + rbac.OPERATOR_CLUSTER_RBAC}
    assert set(verbs[("", "pods")]) == {"get", "list", "watch"}
    assert ("", "configmaps") not in verbs and ("rbac.authorization.k8s.io", "roles") not in verbs
    assert not [e for e in rbac.OPERATOR_RBAC + rbac.OPERATOR_CLUSTER_RBAC if {"escalate", "bind"} & set(e[2])]
    named = {(g, r, v): n for g, r, v, n in rbac.operator_named_rbac(settings)}
    assert named[("rbac.authorization.k8s.io", "clusterroles", ("bind",))] == ("r-job", "r-spark")
    assert rbac.operator_cluster_named_rbac(settings) == [
        ("rbac.authorization.k8s.io", "clusterroles", ("get",), ("r-job", "r-spark"))]


def test_workqueue_deduplicates_and_requeues_keys_added_while_active():
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a"), queue.add("a"), queue.add("b")
        seen = [await queue.get()]
        queue.add("a")  # while active: once more, afterwards
        queue.done("a")
        seen += [await queue.get(), await queue.get()]
        queue.done("b"), queue.done("a")
        queue.add_after("c", 0.01)
        seen.append(await asyncio.wait_for(queue.get(), 1))
        return seen

    assert asyncio.run(scenario()) == ["a", "b", "a", "c"]


def test_backoff_doubles_up_to_a_cap():
    queue: WorkQueue[str] = WorkQueue()
    delays = [queue.backoff("k", base=1, cap=5) for _ in range(5)]
    assert delays == [1, 2, 4, 5, 5]
    queue.forget("k")
    assert queue.backoff("k", base=1) == 1


def test_in_cluster_server_comes_from_the_kubelets_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cluster DNS needed: the operator in a pod talks to KUBERNETES_SERVICE_HOST:PORT."""
    from gpubatch_operator.client import in_cluster_server

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert in_cluster_server("https://kubernetes.default.svc") == "https://kubernetes.default.svc"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert in_cluster_server("https://kubernetes.default.svc") == "https://10.0.0.1:443"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert in_cluster_server("x") == "https://[fd00::1]:443"

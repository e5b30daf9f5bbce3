"""Fixtures of the operator tests: CRDs installed, a restricted namespace, the operator running.

Every test here is marked `cluster` and runs against the real control plane of
tests/cluster (kwok nodes: two GPU nodes with four nvidia.com/gpu each, two
CPU nodes). The operator runs as a subprocess watching only the test's
namespace, so tests in other namespaces do not disturb it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpubatch_operator.builders.rbac import JOB_POD_RULES, SPARK_DRIVER_RULES
from tests.cluster import harness
from tests.operator.operator_process import OperatorProcess

CRDS = harness.REPO_ROOT / "charts" / "gpubatch" / "crds"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="package")
def crds(k8s_cluster: harness.Cluster) -> Iterator[None]:
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS), check=True)
    # The job identities' ClusterRoles, as the chart ships them under the operator's default names
    # (the operator runs here as a process, without the chart): what it binds in each namespace.
    roles = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
              "rules": rules}
             for name, rules in (("gpubatch-job", JOB_POD_RULES), ("gpubatch-spark-driver", SPARK_DRIVER_RULES))]
    k8s_cluster.apply(*roles)
    for plural in ("renderjobs", "trainjobs", "predictjobs"):
        k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.gpubatch.dev",
                            "--timeout=60s", check=True)
    yield
    # Gone when this package's tests end: the chart the e2e tests install ships ClusterRoles of
    # these names, and Helm refuses to adopt objects it did not make.
    k8s_cluster.kubectl("delete", "clusterrole", "gpubatch-job", "gpubatch-spark-driver", "--ignore-not-found",
                        check=True)


@pytest.fixture(scope="module")
def namespace(k8s_cluster: harness.Cluster, crds: None) -> Iterator[str]:
    name = k8s_cluster.create_namespace(harness.unique_name("gpubatch-op"), pod_security="restricted")
    yield name
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(k8s_cluster: harness.Cluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(k8s_cluster.kubeconfig, namespace, log).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "operator" in request.fixturenames:
        print("---- operator log (tail) ----")
        print(request.getfixturevalue("operator").tail())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report

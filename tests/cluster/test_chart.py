"""The Helm chart installs into a real cluster: the release deploys, the
operator Deployment's pod is admitted under PodSecurity `restricted` and
becomes available (kwok runs it), and the release uninstalls cleanly."""

from __future__ import annotations

import json

import pytest

from tests.cluster import harness

pytestmark = pytest.mark.cluster

CHART_DIR = harness.REPO_ROOT / "charts" / "gpubatch"


@pytest.fixture
def chart() -> str:
    if not (CHART_DIR / "Chart.yaml").exists():
        pytest.skip(f"no Helm chart yet ({CHART_DIR / 'Chart.yaml'} is missing)")
    return str(CHART_DIR)


def test_chart_lints(k8s_cluster: harness.Cluster, chart: str) -> None:
    result = k8s_cluster.helm("lint", chart, "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_installs_and_its_operator_becomes_available(
    k8s_cluster: harness.Cluster, chart: str, restricted_namespace: str
) -> None:
    release = "gpubatch"
    install = k8s_cluster.helm(
        "install", release, chart, "--namespace", restricted_namespace, "--timeout", "2m"
    )
    assert install.returncode == 0, install.stdout + install.stderr
    try:
        status = json.loads(
            k8s_cluster.helm(
                "status", release, "-n", restricted_namespace, "-o", "json", check=True
            ).stdout
        )
        assert status["info"]["status"] == "deployed"

        deployments = k8s_cluster.get(
            "deployments", "-n", restricted_namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]
        assert deployments, "the chart created no Deployment labelled with its release"
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            # Fails when PodSecurity `restricted` or a missing ServiceAccount keeps the pod out.
            k8s_cluster.wait_for_condition(
                f"deployment/{name}", restricted_namespace, "Available", timeout=90
            )
        for plural in ("trainjobs", "predictjobs", "renderjobs"):
            assert k8s_cluster.kubectl("get", "crd", f"{plural}.gpubatch.dev").returncode == 0, (
                plural
            )
    finally:
        uninstall = k8s_cluster.helm(
            "uninstall", release, "-n", restricted_namespace, "--wait", "--timeout", "2m"
        )
    assert uninstall.returncode == 0, uninstall.stderr

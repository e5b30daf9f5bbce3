"""Fixtures of the end-to-end tests: real pods from our real images on the test
cluster's real node (tests/cluster/node.sh), the operator installed by helm.

Everything here runs for real: the chart's operator Deployment is a pod on the
operator image, job pods run the engine on the CPU and GPU images, volumes are
folders the local-path provisioner made under `make -s cluster-data-dir`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import harness

REPO = harness.REPO_ROOT
CHART = REPO / "charts" / "gpubatch"
IMAGE_TAG = os.environ.get("GPUBATCH_IMAGE_TAG", "dev")
CPU_IMAGE = f"gpubatch/gpubatch-cpu:{IMAGE_TAG}"
GPU_IMAGE = f"gpubatch/gpubatch-gpu:{IMAGE_TAG}"
OPERATOR_IMAGE = f"gpubatch/gpubatch-operator:{IMAGE_TAG}"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def real_node(k8s_cluster: harness.Cluster) -> str:
    """The real node's name, once it is Ready (else skip, or fail under CI=true)."""
    result = k8s_cluster.kubectl("get", "node", harness.REAL_NODE, "-o", "json")
    problem = None
    if result.returncode != 0:
        problem = f"no node {harness.REAL_NODE} (GPUBATCH_REAL_NODE=0, or node.sh up failed): {result.stderr.strip()}"
    else:
        ready = {c["type"]: c["status"] for c in json.loads(result.stdout)["status"]["conditions"]}
        if ready.get("Ready") != "True":
            problem = f"node {harness.REAL_NODE} is not Ready: {ready}"
    if problem:
        if _in_ci():
            pytest.fail(f"CI=true but {problem}", pytrace=False)
        pytest.skip(problem)
    return harness.REAL_NODE


@pytest.fixture(scope="module")
def e2e_namespace(k8s_cluster: harness.Cluster, real_node: str) -> Iterator[str]:
    """A namespace enforcing PodSecurity `restricted` whose pods all go to the real node."""
    name = k8s_cluster.create_namespace(harness.unique_name("gpubatch-e2e"), pod_security="restricted", nodes="real")
    yield name
    # Jobs first, so that their pods go before the claims they use are released.
    k8s_cluster.kubectl("-n", name, "delete", "jobs", "--all", "--wait=false")
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator_release(k8s_cluster: harness.Cluster, e2e_namespace: str) -> Iterator[str]:
    """`helm install` of the chart in the e2e namespace, the operator a real pod on the operator image.

    Each module has its own release name ("gpubatch-<hex>", also the chart's full name): the release's
    cluster-wide objects (ClusterRoles, admission policies) carry it, so that modules can run side by
    side on the one cluster (tests/run.sh)."""
    release = harness.unique_name("gpubatch")
    # helm installs a chart's crds/ only when they are missing and never
    # upgrades them: apply this checkout's CRDs, so the schema the tests use
    # is the one in the tree (fields missing from an older CRD would be pruned).
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"), check=True)
    for plural in ("renderjobs", "trainjobs", "predictjobs"):
        k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.gpubatch.dev",
                            "--timeout=60s", check=True)
    result = k8s_cluster.helm(
        "install", release, str(CHART), "-n", e2e_namespace, "--wait", "--timeout", "5m",
        "--set", f"watchNamespaces={{{e2e_namespace}}}",
        "--set", f"image.tag={IMAGE_TAG}", "--set", "image.pullPolicy=Never",
        "--set", f"jobImages.gpu.tag={IMAGE_TAG}", "--set", f"jobImages.cpu.tag={IMAGE_TAG}",
        "--set", "jobImages.pullPolicy=Never",
        "--set", "defaults.gpuPendingTimeout=30s",
        # Copy each progress report into status at once (default: at most every 5 s),
        # so a run of a few seconds shows its progress moving.
        "--set", "extraEnv[0].name=GPUBATCH_PROGRESS_INTERVAL", "--set-string", "extraEnv[0].value=0",
        timeout=420,
    )
    try:
        if result.returncode != 0:
            raise AssertionError(f"helm install failed:\n{result.stderr}\n{diagnose(k8s_cluster, e2e_namespace)}")
        yield release
    finally:
        # Also after a failed install: the release's cluster-wide RBAC would
        # otherwise block the next install.
        k8s_cluster.helm("uninstall", release, "-n", e2e_namespace, "--wait", "--timeout", "2m", timeout=180)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The host folder under which the real node's volumes live (`make -s cluster-data-dir`)."""
    path = harness.data_dir()
    assert path.is_dir(), f"{path} (cluster.sh data-dir) does not exist"
    return path


def claim_dir(data_dir: Path, namespace: str, claim: str) -> Path:
    """The host folder of a claim: DATA_DIR/NAMESPACE/CLAIM (the StorageClass's pathPattern).

    Made ahead of the volume (world-writable, as the provisioner makes it) so a
    test can put input there before any pod runs.
    """
    folder = data_dir / namespace / claim
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    return folder


def make_claims(cluster: harness.Cluster, namespace: str, *claims: str) -> None:
    cluster.apply(
        *(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
            for claim in claims
        ),
        namespace=namespace,
    )


def get(cluster: harness.Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=True).stdout)


def diagnose(cluster: harness.Cluster, namespace: str) -> str:
    """What a failing test prints: the resources, pods, events and the last pod logs."""
    parts = []
    for args in (("get", "gpubatch,jobs,pods,pvc", "-o", "wide"), ("get", "events", "--sort-by=.lastTimestamp")):
        parts.append(cluster.kubectl("-n", namespace, *args).stdout[-6000:])
    pods = cluster.get("pods", "-n", namespace)["items"]
    for pod in pods[-3:]:
        name = pod["metadata"]["name"]
        logs = cluster.kubectl("-n", namespace, "logs", name, "--all-containers", "--tail=40").stdout
        parts.append(f"--- logs of {name}\n{logs}")
    return "\n".join(parts)


"""Shared pytest fixtures: the local Kubernetes test cluster.

The cluster (tests/cluster/harness.py) is started once per session, or the one
`make cluster-up` already started is reused; only a cluster started here is
torn down here. Where it cannot be had (no Go to build it) the cluster tests
skip with the reason, except under CI=true, where they fail: CI must never
pass by skipping them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.cluster import harness
from tests.fakegpu import sitecustomize as fake_gpu_shim

KubectlRunner = Callable[..., CompletedProcess[str]]


# GPUBATCH_FAKE_GPU=none|ok:N|broken fakes the GPU here and in every Python process the tests
# start (tests/fakegpu/sitecustomize.py): production code reads no test switch.
FAKE_GPU_DIR = str(Path(__file__).resolve().parent / "fakegpu")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [FAKE_GPU_DIR, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != FAKE_GPU_DIR)])
if FAKE_GPU_DIR not in sys.path:
    sys.path.insert(0, FAKE_GPU_DIR)  # for tests that hand their sys.path to a subprocess
fake_gpu_shim.install()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[harness.Cluster]:
    try:
        cluster = harness.start()
    except harness.ClusterUnavailable as exc:
        if _in_ci():
            pytest.fail(f"CI=true but the test cluster is unavailable: {exc}", pytrace=False)
        pytest.skip(f"test cluster unavailable: {exc}")
    yield cluster
    harness.stop(cluster)


@pytest.fixture(scope="session")
def kubeconfig(k8s_cluster: harness.Cluster) -> Path:
    return k8s_cluster.kubeconfig


@pytest.fixture(scope="session")
def kubectl(k8s_cluster: harness.Cluster) -> KubectlRunner:
    """`kubectl(*args, input=None, check=False)` -> CompletedProcess, aimed at the test cluster."""
    return k8s_cluster.kubectl


@pytest.fixture(scope="session")
def helm(k8s_cluster: harness.Cluster) -> KubectlRunner:
    """`helm(*args, input=None, check=False)` -> CompletedProcess, aimed at the test cluster."""
    return k8s_cluster.helm


@pytest.fixture
def restricted_namespace(k8s_cluster: harness.Cluster) -> Iterator[str]:
    """A fresh namespace enforcing PodSecurity `restricted`, deleted afterwards."""
    name = k8s_cluster.create_namespace(
        harness.unique_name("gpubatch-test"), pod_security="restricted"
    )
    yield name
    k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def module_restricted_namespace(k8s_cluster: harness.Cluster) -> Iterator[str]:
    """Like `restricted_namespace`, shared by the tests of one module."""
    name = k8s_cluster.create_namespace(
        harness.unique_name("gpubatch-mod"), pod_security="restricted"
    )
    yield name
    k8s_cluster.delete_namespace(name)


# GPUBATCH_TEST_CPU_LOG=FILE appends a line per test: the CPU seconds it took in this process
# and in the subprocesses it waited for (setup, call and teardown), then its id; for finding
# where a run's CPU goes (sort -rn FILE | head). Pods' CPU is not counted: it is the node's.
_CPU_LOG = os.environ.get("GPUBATCH_TEST_CPU_LOG")

if _CPU_LOG:

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        before = os.times()
        yield
        after = os.times()
        cpu = sum(after[i] - before[i] for i in range(4))
        with open(_CPU_LOG, "a", encoding="utf-8") as out:
            out.write(f"{cpu:8.1f} {after.elapsed - before.elapsed:8.1f} {item.nodeid}\n")

"""The test cluster is what the other cluster tests assume: a real control
plane at the pinned version with two tainted GPU nodes and two CPU nodes."""

from __future__ import annotations

import json

import pytest

from tests.cluster import harness

pytestmark = pytest.mark.cluster


def _nodes_of_type(cluster: harness.Cluster, node_type: str) -> list[dict]:
    return cluster.get("nodes", "-l", f"{harness.NODE_TYPE_LABEL}={node_type}")["items"]


def test_api_server_reports_the_pinned_version(k8s_cluster: harness.Cluster) -> None:
    version = json.loads(k8s_cluster.kubectl("version", "-o", "json", check=True).stdout)
    assert version["serverVersion"]["gitVersion"] == harness.K8S_VERSION
    assert version["clientVersion"]["gitVersion"] == harness.K8S_VERSION


def test_four_ready_kwok_nodes_and_one_real_node(k8s_cluster: harness.Cluster) -> None:
    nodes = k8s_cluster.get("nodes")["items"]
    names = sorted(n["metadata"]["name"] for n in nodes)
    assert names == ["kwok-cpu-0", "kwok-cpu-1", "kwok-gpu-0", "kwok-gpu-1", harness.REAL_NODE], names
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
    real = next(n for n in nodes if n["metadata"]["name"] == harness.REAL_NODE)
    # A real kubelet on containerd, which no kwok controller manages.
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert real["status"]["nodeInfo"]["kubeletVersion"] == harness.K8S_VERSION
    assert "kwok.x-k8s.io/node" not in real["metadata"].get("annotations", {})


def test_gpu_nodes_advertise_four_gpus_and_are_tainted(k8s_cluster: harness.Cluster) -> None:
    gpu_nodes = _nodes_of_type(k8s_cluster, "gpu")
    assert len(gpu_nodes) == 2
    for node in gpu_nodes:
        name = node["metadata"]["name"]
        assert node["status"]["capacity"][harness.GPU_RESOURCE] == str(harness.GPUS_PER_NODE), name
        assert node["status"]["allocatable"][harness.GPU_RESOURCE] == str(harness.GPUS_PER_NODE), (
            name
        )
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true", name
        taints = [
            {k: t[k] for k in ("key", "value", "effect")} for t in node["spec"].get("taints", [])
        ]
        assert harness.GPU_TAINT in taints, name


def test_cpu_nodes_have_no_gpu(k8s_cluster: harness.Cluster) -> None:
    cpu_nodes = _nodes_of_type(k8s_cluster, "cpu")
    assert len(cpu_nodes) == 2
    for node in cpu_nodes:
        assert harness.GPU_RESOURCE not in node["status"]["capacity"], node["metadata"]["name"]
        assert not node["spec"].get("taints"), node["metadata"]["name"]


def test_restricted_namespace_enforces_pod_security(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    privileged = harness.PodTemplate("privileged").pod()
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    result = k8s_cluster.kubectl(
        "-n", restricted_namespace, "create", "-f", "-", input=json.dumps(privileged)
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr
    assert '"restricted:latest"' in result.stderr

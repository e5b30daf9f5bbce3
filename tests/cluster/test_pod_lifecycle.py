"""Scheduling and pod lifecycle in the test cluster: the real scheduler and
Job controller at work, kwok playing the kubelet as the Stages in
kwok-stages.yaml script it."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.cluster import harness
from tests.cluster.harness import PodTemplate

pytestmark = pytest.mark.cluster


def _node_type(cluster: harness.Cluster, node_name: str) -> str:
    return cluster.get("node", node_name)["metadata"]["labels"][harness.NODE_TYPE_LABEL]


def _terminated(pod: dict) -> dict:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def _unschedulable_message(pod: dict) -> str:
    """The scheduler's reason for not placing the pod; empty while none."""
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return str(condition.get("message", "unschedulable"))
    return ""


def _is_unschedulable(pod: dict) -> bool:
    return bool(_unschedulable_message(pod))


def test_job_pod_runs_to_succeeded_on_a_cpu_node(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    work = PodTemplate("cpu-work")
    k8s_cluster.apply(work.job(), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_phase(restricted_namespace, work.selector, ["Succeeded"])

    assert _node_type(k8s_cluster, pod["spec"]["nodeName"]) == "cpu"
    assert _terminated(pod)["exitCode"] == 0
    k8s_cluster.wait_for_condition(f"job/{work.name}", restricted_namespace, "Complete")


def test_gpu_limited_pod_lands_on_a_gpu_node(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    work = PodTemplate("gpu-work").gpus(2)
    k8s_cluster.apply(work.job(), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_phase(restricted_namespace, work.selector, ["Running", "Succeeded"])

    assert _node_type(k8s_cluster, pod["spec"]["nodeName"]) == "gpu"
    k8s_cluster.wait_for_condition(f"job/{work.name}", restricted_namespace, "Complete")


def test_gpu_pod_without_the_toleration_is_unschedulable(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    work = PodTemplate("no-toleration").gpus(1, tolerate=False)
    k8s_cluster.apply(work.pod(), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_pod(
        restricted_namespace, work.selector, _is_unschedulable, what="an unschedulable pod"
    )

    assert pod["status"]["phase"] == "Pending"
    assert "untolerated taint" in _unschedulable_message(pod)


def test_gpu_exhaustion_leaves_the_next_pod_pending(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    # Bare pods (no Job) stay Running, so they keep their GPUs: 2 nodes x 4 GPUs.
    holders = [PodTemplate(f"holder-{i}").gpus(harness.GPUS_PER_NODE) for i in range(2)]
    k8s_cluster.apply(*(h.pod() for h in holders), namespace=restricted_namespace)
    for holder in holders:
        k8s_cluster.wait_for_phase(restricted_namespace, holder.selector, ["Running"])

    extra = PodTemplate("one-too-many").gpus(1)
    k8s_cluster.apply(extra.pod(), namespace=restricted_namespace)
    pod = k8s_cluster.wait_for_pod(
        restricted_namespace, extra.selector, _is_unschedulable, what="an unschedulable pod"
    )

    assert pod["status"]["phase"] == "Pending"
    assert f"Insufficient {harness.GPU_RESOURCE}" in _unschedulable_message(pod)


@pytest.mark.parametrize("exit_code", [1, 75])
def test_exit_code_annotation_fails_the_pod_with_that_code(
    k8s_cluster: harness.Cluster, restricted_namespace: str, exit_code: int
) -> None:
    work = PodTemplate(f"exits-{exit_code}").exit_code(exit_code)
    k8s_cluster.apply(work.job(backoff_limit=0), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_phase(restricted_namespace, work.selector, ["Failed", "Succeeded"])

    assert pod["status"]["phase"] == "Failed"
    assert _terminated(pod)["exitCode"] == exit_code
    assert _terminated(pod)["reason"] == "Error"
    k8s_cluster.wait_for_condition(f"job/{work.name}", restricted_namespace, "Failed")


def test_exit_code_zero_succeeds(k8s_cluster: harness.Cluster, restricted_namespace: str) -> None:
    work = PodTemplate("exits-0").exit_code(0)
    k8s_cluster.apply(work.pod(), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_phase(restricted_namespace, work.selector, ["Failed", "Succeeded"])

    assert pod["status"]["phase"] == "Succeeded"
    assert _terminated(pod)["exitCode"] == 0


@pytest.mark.parametrize("exit_code", [0, 75])
def test_termination_message_annotation_becomes_the_container_message(
    k8s_cluster: harness.Cluster, restricted_namespace: str, exit_code: int
) -> None:
    summary = json.dumps({"device": "gpu", "throughput": 1234.5, "note": 'a "quoted" word'})
    work = PodTemplate(f"reports-{exit_code}").termination_message(summary)
    if exit_code:
        work.exit_code(exit_code)
    k8s_cluster.apply(work.job(), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_phase(restricted_namespace, work.selector, ["Failed", "Succeeded"])

    assert json.loads(_terminated(pod)["message"]) == json.loads(summary)
    assert _terminated(pod)["exitCode"] == exit_code


def test_stay_pending_annotation_keeps_the_pod_pending(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    work = PodTemplate("stuck").stay_pending()
    k8s_cluster.apply(work.job(), namespace=restricted_namespace)
    # Scheduled, yet never started; and the Stage that would start it had its chance.
    k8s_cluster.wait_for_pod(
        restricted_namespace,
        work.selector,
        lambda pod: bool(pod["spec"].get("nodeName")),
        what="a scheduled pod",
    )
    ready = PodTemplate("control")
    k8s_cluster.apply(ready.job(), namespace=restricted_namespace)
    k8s_cluster.wait_for_phase(restricted_namespace, ready.selector, ["Succeeded"])

    (pod,) = k8s_cluster.pods(restricted_namespace, work.selector)
    assert pod["status"]["phase"] == "Pending"
    assert not pod["status"].get("containerStatuses")


def test_run_seconds_annotation_keeps_the_pod_running_that_long(
    k8s_cluster: harness.Cluster, restricted_namespace: str
) -> None:
    work = PodTemplate("runs-4s").run_seconds(4)
    k8s_cluster.apply(work.job(), namespace=restricted_namespace)

    pod = k8s_cluster.wait_for_phase(restricted_namespace, work.selector, ["Succeeded"], timeout=60)

    terminated = _terminated(pod)
    started = datetime.fromisoformat(terminated["startedAt"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(terminated["finishedAt"].replace("Z", "+00:00"))
    assert (finished - started).total_seconds() >= 3.5

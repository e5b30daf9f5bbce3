"""The operator on the real control plane: device choice, fallbacks, exit codes, result, progress, Kueue.

One operator process serves the module; the namespace enforces PodSecurity
`restricted`, so every pod that runs here was admitted under it. kwok plays
the kubelet: annotations `gpubatch.dev/test-*` on a resource reach its pods
(the operator's test hook) and script their fate.

What real pods prove (tests/e2e/test_real_pods.py) is no longer scripted
here: an engine's exit 1 and its message, a GPU pod's exit 75 and the CPU
re-run, progress patched by the pod, the termination message as the result.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster import harness
from tests.operator.operator_process import (
    OperatorProcess,
    condition,
    events_for,
    render_job,
    status_of,
    wait_for_phase,
)

FINAL = {"Succeeded", "Failed"}


def node_type(cluster: harness.Cluster, node: str) -> str:
    return cluster.get("node", node)["metadata"]["labels"][harness.NODE_TYPE_LABEL]


def pods_of(cluster: harness.Cluster, namespace: str, job: str) -> list[dict]:
    return cluster.pods(namespace, f"job-name={job}")


@pytest.mark.parametrize(("policy", "device"), [("gpu", "gpu"), ("cpu", "cpu"), (None, "gpu")])
def test_job_lands_on_a_node_of_its_device(k8s_cluster, namespace, operator: OperatorProcess, policy, device):
    name = f"place-{policy or 'default'}"
    summary = {"ok": True, "device": device, "imagesPerSecond": 1234.5}
    k8s_cluster.apply(render_job(name, device={"policy": policy} if policy else None,
                                 annotations={harness.TERMINATION_MESSAGE_ANNOTATION: json.dumps(summary)}),
                      namespace=namespace)
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", name, FINAL)
    assert status["phase"] == "Succeeded", status
    assert status["device"] == device and status["jobName"] == f"{name}-render"
    assert status["result"] == summary, "the termination message becomes status.result"
    assert status["progress"] == "100%" and status["startTime"] and status["completionTime"]
    assert status["observedGeneration"] == 1 and status["attempts"] == 1
    (pod,) = pods_of(k8s_cluster, namespace, status["jobName"])
    assert node_type(k8s_cluster, pod["spec"]["nodeName"]) == device
    reasons = [e["reason"] for e in events_for(k8s_cluster, namespace, name)]
    assert {"Created", "Started", "Completed"} <= set(reasons)


def test_exit_75_without_fallback_fails(k8s_cluster, namespace, operator):
    k8s_cluster.apply(render_job("gpu-strict", device={"policy": "gpu", "fallbackOnGpuFailure": False},
                                 annotations={harness.EXIT_CODE_ANNOTATION: "75"}), namespace=namespace)
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", "gpu-strict", FINAL)
    assert status["phase"] == "Failed" and condition(status, "Failed")["reason"] == "GpuUnusable"
    assert status["attempts"] == 1


def test_queue_name_makes_a_suspended_labelled_job(k8s_cluster, namespace, operator):
    k8s_cluster.apply(render_job("queued", device={"policy": "cpu"}, queueName="team-a"), namespace=namespace)
    status = harness.wait_until(
        lambda: (s := status_of(k8s_cluster, namespace, "renderjob", "queued")).get("jobName") and s,
        timeout=30, what="the queued Job")
    job = k8s_cluster.get("job", status["jobName"], "-n", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    harness.wait_until(lambda: condition(status_of(k8s_cluster, namespace, "renderjob", "queued"), "JobCreated"),
                       timeout=15, what="JobCreated")
    assert status_of(k8s_cluster, namespace, "renderjob", "queued")["phase"] == "Pending"


def test_job_pods_run_as_the_minimal_service_account(k8s_cluster, namespace, operator):
    k8s_cluster.apply(render_job("identity", device={"policy": "cpu"}), namespace=namespace)
    wait_for_phase(k8s_cluster, namespace, "renderjob", "identity", FINAL)
    (pod,) = pods_of(k8s_cluster, namespace, "identity-render")
    assert pod["spec"]["serviceAccountName"] == "gpubatch-job"
    can = k8s_cluster.kubectl("auth", "can-i", "patch", "pods", "-n", namespace,
                              f"--as=system:serviceaccount:{namespace}:gpubatch-job")
    cannot = k8s_cluster.kubectl("auth", "can-i", "create", "jobs", "-n", namespace,
                                 f"--as=system:serviceaccount:{namespace}:gpubatch-job")
    assert can.stdout.strip() == "yes" and cannot.stdout.strip() == "no"


def test_metrics_count_jobs_and_fallbacks(k8s_cluster, namespace, operator):
    # A scripted exit 75 on the GPU (the real one is in tests/e2e): what the counters see.
    k8s_cluster.apply(render_job("metrics-fallback", device={"policy": "auto"}, annotations={
        "gpubatch.dev/test-gpu-exit-code": "75"}), namespace=namespace)
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", "metrics-fallback", FINAL)
    assert status["phase"] == "Succeeded" and condition(status, "FellBackToCPU")["reason"] == "GpuUnusable"
    text = operator.metrics()
    assert 'gpubatch_jobs{device="cpu",kind="RenderJob",phase="Succeeded"}' in text
    assert 'gpubatch_fallbacks_total{kind="RenderJob",reason="GpuUnusable"}' in text
    assert "gpubatch_reconcile_duration_seconds_bucket" in text


def test_gpus_exhausted_falls_back_after_the_pending_timeout(k8s_cluster, namespace, operator):
    # Two pods holding four GPUs each, bound but never finishing: every GPU is taken.
    k8s_cluster.apply(render_job("gpu-hog", device={"policy": "gpu", "gpus": 4}, shards=2,
                                 annotations={harness.STAY_PENDING_ANNOTATION: "true"}), namespace=namespace)
    harness.wait_until(lambda: len([p for p in pods_of(k8s_cluster, namespace, "gpu-hog-render")
                                    if p["spec"].get("nodeName")]) == 2, timeout=60, what="GPU hog pods bound")
    try:
        k8s_cluster.apply(render_job("starved", device={"policy": "auto", "gpuPendingTimeout": "5s"}),
                          namespace=namespace)
        status = wait_for_phase(k8s_cluster, namespace, "renderjob", "starved", FINAL, timeout=90)
        assert status["phase"] == "Succeeded" and status["device"] == "cpu", status
        fell_back = condition(status, "FellBackToCPU")
        assert fell_back["reason"] == "GpuUnschedulable" and "nvidia.com/gpu" in fell_back["message"]
        harness.wait_until(lambda: not pods_of(k8s_cluster, namespace, "starved-render"), timeout=30,
                           what="the GPU Job's pod to be gone")
        assert k8s_cluster.kubectl("get", "job", "starved-render", "-n", namespace).returncode != 0
        assert any(e["reason"] == "GpuUnschedulable" and e["type"] == "Warning"
                   for e in events_for(k8s_cluster, namespace, "starved"))
    finally:
        k8s_cluster.kubectl("delete", "renderjob", "gpu-hog", "-n", namespace, "--wait=false")

"""Issue 14 on the real control plane: long names, spec edits, a lost job ServiceAccount,
unexpected errors retried, and a second operator replica taking over from a killed leader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster import harness
from tests.operator.operator_process import (
    OperatorProcess,
    condition,
    events_for,
    render_job,
    wait_for_phase,
)

FINAL = {"Succeeded", "Failed"}


def test_a_200_character_name_gets_its_job_and_status(k8s_cluster, namespace, operator: OperatorProcess):
    name = "long-" + "n" * 195
    assert len(name) == 200
    k8s_cluster.apply(render_job(name, device={"policy": "cpu"}), namespace=namespace)
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", name, FINAL)
    assert status["phase"] == "Succeeded", status
    job = k8s_cluster.get("job", status["jobName"], "-n", namespace)
    uid = k8s_cluster.get("renderjob", name, "-n", namespace)["metadata"]["uid"]
    assert job["metadata"]["labels"]["gpubatch.dev/owner-uid"] == uid
    assert len(job["metadata"]["labels"]["gpubatch.dev/owner"]) <= 63


def test_a_spec_edit_is_refused_by_the_api_server(k8s_cluster, namespace, operator):
    k8s_cluster.apply(render_job("edited", device={"policy": "cpu"},
                                 annotations={harness.RUN_SECONDS_ANNOTATION: "30"}), namespace=namespace)
    wait_for_phase(k8s_cluster, namespace, "renderjob", "edited", {"Pending", "Running"})
    for patch in ('{"spec": {"width": 64}}', '{"spec": {"device": {"policy": "gpu"}}}', '{"spec": {"backoffLimit": 5}}'):
        result = k8s_cluster.kubectl("patch", "renderjob", "edited", "-n", namespace, "--type=merge", "-p", patch)
        assert result.returncode != 0, patch
        assert "spec is immutable once the job exists" in result.stderr and "kubectl replace --force" in result.stderr
    # Metadata (labels, annotations) may still change: only the spec is the job.
    assert k8s_cluster.kubectl("label", "renderjob", "edited", "-n", namespace, "team=a").returncode == 0


def test_a_deleted_job_service_account_is_created_again(k8s_cluster, namespace, operator):
    k8s_cluster.apply(render_job("before-sa-loss", device={"policy": "cpu"}), namespace=namespace)
    assert wait_for_phase(k8s_cluster, namespace, "renderjob", "before-sa-loss", FINAL)["phase"] == "Succeeded"
    old_uid = k8s_cluster.get("serviceaccount", "gpubatch-job", "-n", namespace)["metadata"]["uid"]
    k8s_cluster.kubectl("delete", "serviceaccount", "gpubatch-job", "-n", namespace, "--wait=true", check=True)

    def recreated() -> bool:
        result = k8s_cluster.kubectl("get", "serviceaccount", "gpubatch-job", "-n", namespace, "-o", "json")
        return result.returncode == 0 and json.loads(result.stdout)["metadata"]["uid"] != old_uid

    # Re-created while nothing runs: the watch on our ServiceAccounts saw the deletion.
    k8s_cluster.apply(render_job("after-sa-loss", device={"policy": "cpu"}), namespace=namespace)
    harness.wait_until(recreated, timeout=30, what="the gpubatch-job ServiceAccount re-created")
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", "after-sa-loss", FINAL, timeout=120)
    assert status["phase"] == "Succeeded", status


def test_an_unexpected_error_is_retried_not_bad_input(k8s_cluster, namespace, operator):
    message = "unexpected error (exit 2, retried up to backoffLimit): OSError: [Errno 28] No space left on device"
    k8s_cluster.apply(render_job("unexpected", device={"policy": "cpu"}, backoffLimit=1, annotations={
        harness.EXIT_CODE_ANNOTATION: "2",
        harness.TERMINATION_MESSAGE_ANNOTATION: json.dumps({"ok": False, "reason": "UnexpectedError",
                                                             "message": message}),
    }), namespace=namespace)
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", "unexpected", FINAL, timeout=120)
    assert status["phase"] == "Failed"
    failed = condition(status, "Failed")
    assert failed["reason"] != "BadInput" and status["message"] == message
    pods = k8s_cluster.pods(namespace, "job-name=unexpected-render")
    assert len(pods) == 2, "exit 2 is retried up to backoffLimit (1 retry)"
    assert any(e["type"] == "Warning" for e in events_for(k8s_cluster, namespace, "unexpected"))


@pytest.fixture
def two_replicas(k8s_cluster, namespace, operator, tmp_path):
    operator.stop()  # the module's single operator steps aside for the pair
    settings = {"GPUBATCH_LEADER_ELECTION": "true", "GPUBATCH_LEASE_SECONDS": "6",
                "GPUBATCH_LEADER_ELECTION_LEASE": "gpubatch-ha-test"}
    pair = [OperatorProcess(k8s_cluster.kubeconfig, namespace, tmp_path / f"replica-{i}.log", **settings)
            for i in range(2)]
    for replica in pair:
        replica.start()
    yield pair
    for replica in pair:
        if replica.alive:
            print(f"---- {replica.log.name} ----\n{replica.tail()}")
        replica.stop()
    operator.start()


def lease_spec(cluster: harness.Cluster, namespace: str) -> Any:
    """The Lease's spec (None before one exists), read with the official (synchronous) client, as a user's
    script would."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = client.CoordinationV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    try:
        return api.read_namespaced_lease("gpubatch-ha-test", namespace).spec
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def lease_holder(cluster: harness.Cluster, namespace: str) -> str:
    spec = lease_spec(cluster, namespace)
    return (spec.holder_identity or "") if spec is not None else ""


def test_killing_the_active_replica_hands_over_within_the_lease(k8s_cluster, namespace, two_replicas):
    holder = harness.wait_until(lambda: lease_holder(k8s_cluster, namespace), timeout=30, what="a leader")
    (leader,) = [r for r in two_replicas if r.process is not None and holder.endswith(f"-{r.process.pid}")]
    (standby,) = [r for r in two_replicas if r is not leader]
    k8s_cluster.apply(render_job("ha-before", device={"policy": "cpu"},
                                 annotations={harness.RUN_SECONDS_ANNOTATION: "8"}), namespace=namespace)
    wait_for_phase(k8s_cluster, namespace, "renderjob", "ha-before", {"Running"})
    leader.kill()
    # The killed leader's last renewal, as the Lease records it (read after the kill: nothing renews it now).
    last_renewal = lease_spec(k8s_cluster, namespace).renew_time
    k8s_cluster.apply(render_job("ha-after", device={"policy": "cpu"}), namespace=namespace)
    assert standby.process is not None
    taken = harness.wait_until(
        lambda: ((spec := lease_spec(k8s_cluster, namespace)).holder_identity or "").endswith(f"-{standby.process.pid}")
        and spec, timeout=30, interval=0.2, what="the standby holding the Lease")
    # From the Lease's own times (written by the replicas), not the test's polling: the standby takes
    # over once the lease time (6 s) has passed since the last renewal, within a retry period (1.2 s),
    # plus up to 2 s for a replica starved of CPU on a loaded machine (a standby that waited for a
    # restart, or never took over, would be 30 s late or time out).
    handover = (taken.acquire_time - last_renewal).total_seconds()
    assert 6 - 0.5 <= handover <= 6 + 1.2 + 2.0, f"handover {handover:.1f}s after the last renewal (lease 6s)"
    status = wait_for_phase(k8s_cluster, namespace, "renderjob", "ha-after", FINAL, timeout=60)
    assert status["phase"] == "Succeeded", status
    # The resource the old leader was running finishes under the new one: no lost status, no second Job.
    before = wait_for_phase(k8s_cluster, namespace, "renderjob", "ha-before", FINAL, timeout=60)
    assert before["phase"] == "Succeeded" and before["attempts"] == 1
    jobs = k8s_cluster.get("jobs", "-n", namespace, "-l", "app.kubernetes.io/managed-by=gpubatch-operator")["items"]
    names = [j["metadata"]["name"] for j in jobs]
    assert len(names) == len(set(names)) and names.count("ha-before-render") == 1
    assert not [n for n in names if n.startswith("ha-") and n.endswith("-cpu")]

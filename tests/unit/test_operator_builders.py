"""The Job builder: pure dicts, asserted field by field."""

from __future__ import annotations

import json

import pytest

from gpubatch_operator.builders import build_event, job_rbac_objects
from gpubatch_operator.builders.rbac import JOB_POD_RULES
from gpubatch_operator.naming import MAX_JOB_NAME, job_name
from tests.operator.helpers import make_job


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def env(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_gpu_job_asks_for_gpus_tolerates_the_taint_and_uses_the_gpu_image():
    job = make_job("x").gpus(2).set(nodeSelector={"pool": "a100"}).obj()
    pod = job["spec"]["template"]["spec"]
    assert container(job)["image"] == "gpubatch/gpubatch-gpu:0.1.0"
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert env(job)["GPUBATCH_DEVICE"] == "gpu"


def test_cpu_job_has_no_gpu_and_hides_gpus_from_a_cuda_image():
    job = make_job("x").cpu().set(resources={"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}).obj()
    assert container(job)["image"] == "gpubatch/gpubatch-cpu:0.1.0"
    assert container(job)["resources"] == {"limits": {"memory": "4Gi"}}
    assert "tolerations" not in job["spec"]["template"]["spec"]
    assert env(job)["GPUBATCH_DEVICE"] == "cpu"
    assert env(job)["NVIDIA_VISIBLE_DEVICES"] == "void"


@pytest.mark.parametrize(
    ("overrides", "device", "image"),
    [
        ({}, "gpu", "gpubatch/gpubatch-gpu:0.1.0"),
        ({"gpu_image": "reg.local/g:1"}, "gpu", "reg.local/g:1"),
        ({"cpu_image": "reg.local/c:1"}, "cpu", "reg.local/c:1"),
    ],
)
def test_images_come_from_settings(overrides, device, image):
    maker = make_job("x").settings(**overrides)
    job = (maker.gpus(1) if device == "gpu" else maker.cpu()).obj()
    assert container(job)["image"] == image


def test_spec_image_overrides_settings():
    job = make_job("x").cpu().set(image={"cpu": "mine:2", "pullPolicy": "Always"}).obj()
    assert (container(job)["image"], container(job)["imagePullPolicy"]) == ("mine:2", "Always")


def test_pod_runs_the_entrypoint_with_the_validated_spec_and_the_device_instruction():
    job = make_job("x", "TrainJob").gpus(1).obj()
    assert container(job)["command"] == ["gpubatch-job", "train"]
    spec = json.loads(env(job)["GPUBATCH_SPEC"])
    # The pod gets a device, not a policy: the spec travels as written (no policy filled in).
    assert "policy" not in spec["device"]
    assert (env(job)["GPUBATCH_DEVICE"], env(job)["GPUBATCH_ON_GPU_FAILURE"]) == ("gpu", "exit")
    assert spec["model"]["type"] == "dnn" and "epochs" not in spec  # as written; the pod fills in defaults
    assert env(job)["GPUBATCH_NAME"] == "x"
    assert env(job)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env(job)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


@pytest.mark.parametrize(
    ("kind", "claims"),
    [("RenderJob", ["data", "out"]), ("TrainJob", ["data", "out"]), ("PredictJob", ["data", "out", "models"])],
)
def test_pvc_paths_are_mounted_under_mnt_pvc(kind, claims):
    job = make_job("x", kind).obj()
    mounts = container(job)["volumeMounts"]
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert sorted(m["mountPath"] for m in mounts) == sorted([*(f"/mnt/pvc/{c}" for c in claims), "/tmp"])
    claimed = [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]
    assert sorted(claimed) == sorted(claims)


def test_local_paths_mount_only_the_scratch_folder():
    job = make_job("x").set(input={"path": "data/x.h5"}, output={"path": "out/y.h5"}).obj()
    assert container(job)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert job["spec"]["template"]["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {}}]


def test_security_context_passes_restricted():
    job = make_job("x").gpus(1).obj()
    pod = job["spec"]["template"]["spec"]
    ctx = container(job)["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "gpubatch-job"
    # Never the log's tail: it may quote data, and the message goes to status and Events.
    assert container(job)["terminationMessagePolicy"] == "File"


def test_exit_1_and_75_fail_the_job_at_once_and_lifecycle_fields_pass_through():
    job = make_job("x").set(backoffLimit=4, activeDeadlineSeconds=600, ttlSecondsAfterFinished=60).obj()
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob",
                        "onExitCodes": {"containerName": "main", "operator": "In", "values": [1, 75]}}
    assert rules[1]["action"] == "Ignore"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"],
            job["spec"]["ttlSecondsAfterFinished"]) == (4, 600, 60)


def test_shards_make_an_indexed_job():
    spec = make_job("x").shards(8).obj()["spec"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (8, 8, "Indexed")
    assert "completionMode" not in make_job("x").obj()["spec"]


def test_queue_name_labels_and_suspends_the_job():
    job = make_job("x").queue("team-a").obj()
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    assert "suspend" not in make_job("x").obj()["spec"]


def test_owner_reference_and_labels_tie_the_job_to_its_resource():
    job = make_job("x", "PredictJob").gpus(1).obj()
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "PredictJob" and owner["name"] == "x" and owner["controller"] is True
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["gpubatch.dev/kind"] == "predictjob" and labels["gpubatch.dev/owner"] == "x"
    assert labels["app.kubernetes.io/managed-by"] == "gpubatch-operator"
    assert labels["gpubatch.dev/device"] == "gpu"


@pytest.mark.parametrize(
    ("annotations", "device", "expected"),
    [
        ({"gpubatch.dev/test-exit-code": "1", "other/x": "y"}, "gpu", {"gpubatch.dev/test-exit-code": "1"}),
        ({"gpubatch.dev/test-gpu-exit-code": "75"}, "gpu", {"gpubatch.dev/test-exit-code": "75"}),
        ({"gpubatch.dev/test-gpu-exit-code": "75"}, "cpu", {}),
        ({"gpubatch.dev/progress": "{}"}, "cpu", {}),
    ],
)
def test_only_test_hook_annotations_reach_the_pod(annotations, device, expected):
    maker = make_job("x").settings(test_hooks=True)
    for key, value in annotations.items():
        maker.annotate(key, value)
    job = (maker.gpus(1) if device == "gpu" else maker.cpu()).obj()
    assert job["spec"]["template"]["metadata"].get("annotations", {}) == expected


def test_the_test_hook_is_off_unless_the_operator_turns_it_on():
    job = make_job("x").annotate("gpubatch.dev/test-exit-code", "1").cpu().obj()
    assert "annotations" not in job["spec"]["template"]["metadata"]


@pytest.mark.parametrize("name", ["x", "a" * 63, "b" * 40 + "-c" * 11])
def test_job_names_are_deterministic_distinct_and_short(name):
    first, rerun = job_name(name, "predict"), job_name(name, "predict", cpu_rerun=True)
    assert first == job_name(name, "predict") and first != rerun
    assert len(first) <= MAX_JOB_NAME and len(rerun) <= MAX_JOB_NAME
    assert job_name(name, "render") != job_name(name, "train")


def test_job_identity_is_a_binding_to_the_charts_cluster_role_owned_by_it():
    """The operator makes no Role: it binds the chart's ClusterRole (it holds `bind` on it, not its rules),
    and the ClusterRole owns what it made, so uninstalling the chart removes every binding."""
    owner = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "r-job", "uid": "cr-uid"}
    account, binding = job_rbac_objects("ns", "gpubatch-job", "r-job", owner=owner)
    assert account["kind"] == "ServiceAccount" and account["metadata"]["namespace"] == "ns"
    assert binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] == "ns"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r-job"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpubatch-job", "namespace": "ns"}]
    assert account["metadata"]["ownerReferences"] == binding["metadata"]["ownerReferences"] == [owner]
    assert JOB_POD_RULES == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]


def test_a_worker_groups_network_policy_admits_only_its_own_pods_on_the_worker_port():
    from gpubatch_jobs.contract import WORKER_PORT
    from gpubatch_operator.builders import build_worker_network_policy

    request = make_job("t", "TrainJob").set(workers=2, batchSize=64).request()
    policy = build_worker_network_policy(request)
    selector = {"matchLabels": {"gpubatch.dev/owner-uid": request.uid}}
    assert policy["metadata"]["name"] == "t-workers" and policy["metadata"]["ownerReferences"][0]["uid"] == request.uid
    assert policy["spec"] == {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [
        {"from": [{"podSelector": selector}], "ports": [{"protocol": "TCP", "port": WORKER_PORT}]}]}


def test_event_names_the_resource():
    event = build_event(kind="RenderJob", name="x", namespace="ns", uid="u", event_type="Warning",
                        reason="GpuUnschedulable", message="m", now="2026-01-01T00:00:00Z")
    assert event["involvedObject"]["kind"] == "RenderJob" and event["type"] == "Warning"
    assert event["metadata"] == {"generateName": "x.", "namespace": "ns"}

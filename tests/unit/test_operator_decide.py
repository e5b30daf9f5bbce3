"""decide(): what the reconciler does for each observed world, as tables of cases."""

from __future__ import annotations

import json

import pytest

from gpubatch_operator.decide import CreateJob, DeleteJob, decide
from tests.operator.helpers import job_body, make_world, pod_body

FIRST, RERUN = "x-render", "x-render-cpu"


@pytest.mark.parametrize(
    ("policy", "gpu_nodes", "device", "fallback"),
    [
        ("auto", 2, "gpu", None),
        ("auto", 0, "cpu", "NoGpuNodes"),
        ("gpu", 0, "gpu", None),
        ("cpu", 2, "cpu", None),
    ],
)
def test_first_job_device(policy, gpu_nodes, device, fallback):
    plan = decide(make_world().device(policy=policy).gpu_nodes(gpu_nodes).obj())
    assert plan.actions == [CreateJob(FIRST, device, 1, fallback)]
    assert plan.outcome.phase == "Pending" and plan.outcome.device == device
    assert (plan.outcome.fallback or (None,))[0] == fallback


def test_auto_waits_until_the_nodes_are_known():
    plan = decide(make_world().gpu_nodes(None).obj())
    assert plan.actions == [] and plan.outcome is None and plan.requeue_after


@pytest.mark.parametrize(("default", "device"), [("cpu", "cpu"), ("gpu", "gpu"), ("auto", "gpu")])
def test_unset_policy_takes_the_operator_default(default, device):
    plan = decide(make_world().defaults(policy=default).obj())
    assert plan.actions[0].device == device


def test_given_policy_beats_the_operator_default():
    plan = decide(make_world().device(policy="cpu").defaults(policy="gpu").obj())
    assert plan.actions[0].device == "cpu"


def test_existing_job_is_followed_not_recreated():
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST)).pod(pod_body(FIRST)).obj())
    assert plan.actions == [] and plan.outcome.phase == "Running"


def test_job_recorded_but_unseen_is_created_again_under_the_same_name():
    plan = decide(make_world().status(jobName=FIRST, device="gpu", phase="Pending").obj())
    assert plan.actions == [CreateJob(FIRST, "gpu", 1)]


def test_job_of_an_earlier_resource_with_the_same_name_is_ignored():
    plan = decide(make_world().job(job_body(FIRST, uid="someone-else")).obj())
    assert plan.actions == [CreateJob(FIRST, "gpu", 1, None)]


@pytest.mark.parametrize(
    ("waited", "timeout", "falls_back"),
    [(10, "5s", True), (2, "5s", False), (299, None, False), (301, None, True)],
)
def test_gpu_pending_timeout(waited, timeout, falls_back):
    maker = make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST))
    if timeout:
        maker.device(gpuPendingTimeout=timeout)
    plan = decide(maker.pod(pod_body(FIRST, phase="Pending", unschedulable_for=waited)).obj())
    if falls_back:
        assert plan.actions == [CreateJob(RERUN, "cpu", 2, "GpuUnschedulable"), DeleteJob(FIRST)]
        assert plan.outcome.fallback[0] == "GpuUnschedulable" and plan.outcome.device == "cpu"
    else:
        assert plan.actions == [] and 0 < plan.requeue_after <= 300


def test_pending_timeout_applies_to_auto_only():
    plan = decide(make_world().device(policy="gpu").status(jobName=FIRST, device="gpu").job(job_body(FIRST))
                  .pod(pod_body(FIRST, phase="Pending", unschedulable_for=3600)).obj())
    assert plan.actions == []


def test_unschedulable_for_another_reason_does_not_fall_back():
    pod = pod_body(FIRST, phase="Pending", unschedulable_for=3600,
                   unschedulable_message='persistentvolumeclaim "data" not found')
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST)).pod(pod).obj())
    assert plan.actions == [] and "not found" in plan.outcome.message


def failed(code: int) -> dict:
    return job_body(FIRST, conditions={"Failed": ("PodFailurePolicy", f"failed with exit code {code} matching")})


@pytest.mark.parametrize(
    ("code", "fallback_allowed", "device", "expect"),
    [
        (75, True, "gpu", "fallback"),
        (75, False, "gpu", "Failed"),
        (75, True, "cpu", "Failed"),
        (1, True, "gpu", "Failed"),
    ],
)
def test_exit_codes(code, fallback_allowed, device, expect):
    summary = json.dumps({"ok": False, "message": "spec.input.path: no such file"})
    plan = decide(make_world().device(fallbackOnGpuFailure=fallback_allowed)
                  .status(jobName=FIRST, device=device)
                  .job({**failed(code), "metadata": {**failed(code)["metadata"],
                        "labels": {**failed(code)["metadata"]["labels"], "gpubatch.dev/device": device}}})
                  .pod(pod_body(FIRST, phase="Failed", exit_code=code, message=summary)).obj())
    if expect == "fallback":
        assert plan.actions == [CreateJob(RERUN, "cpu", 2, "GpuUnusable"), DeleteJob(FIRST)]
    else:
        assert plan.actions == [] and plan.outcome.phase == "Failed"
        assert plan.outcome.message == "spec.input.path: no such file"
        assert plan.outcome.reason == ("BadInput" if code == 1 else "GpuUnusable")


def test_after_a_fallback_the_rerun_is_followed_and_the_gpu_job_removed():
    world = (make_world().status(jobName=RERUN, device="cpu", attempts=2)
             .job(job_body(FIRST)).job(job_body(RERUN, device="cpu")).pod(pod_body(RERUN)).obj())
    plan = decide(world)
    assert plan.actions == [DeleteJob(FIRST)]
    assert plan.outcome.phase == "Running" and plan.outcome.device == "cpu" and plan.outcome.attempts == 2


def test_rerun_created_before_the_status_was_written_is_found():
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(job_body(RERUN, device="cpu")).obj())
    assert plan.outcome.job_name == RERUN


def test_success_copies_the_summary_and_progress():
    summary = {"ok": True, "imagesPerSecond": 900.0}
    plan = decide(make_world().status(jobName=FIRST, device="gpu")
                  .job(job_body(FIRST, conditions={"Complete": ("", "")}))
                  .pod(pod_body(FIRST, phase="Succeeded", exit_code=0, message=json.dumps(summary))).obj())
    assert plan.outcome.phase == "Succeeded" and plan.outcome.result == summary
    assert plan.outcome.progress == "100%"


def test_shard_summaries_are_listed_by_index():
    maker = make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST, conditions={"Complete": ("", "")}))
    for index in (1, 0):
        maker.pod(pod_body(FIRST, phase="Succeeded", exit_code=0, index=index, message=json.dumps({"shard": index})))
    assert decide(maker.obj()).outcome.result == {"shards": [{"shard": 0}, {"shard": 1}]}


def test_progress_sums_over_pods():
    maker = make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST))
    maker.pod(pod_body(FIRST, index=0, progress=json.dumps({"done": 30, "total": 50, "stage": "render"})))
    maker.pod(pod_body(FIRST, index=1, progress=json.dumps({"done": 12, "total": 50})))
    assert decide(maker.obj()).outcome.progress == "42%"


def test_suspended_job_waits_for_kueue():
    plan = decide(make_world().spec(queueName="team-a").status(jobName=FIRST, device="gpu")
                  .job(job_body(FIRST, suspend=True)).obj())
    assert plan.outcome.phase == "Pending" and plan.outcome.reason == "Queued" and "team-a" in plan.outcome.message


@pytest.mark.parametrize(
    ("policy", "waited", "falls_back"),
    [("auto", 31, True), ("auto", 5, False), ("gpu", 3600, False)],
)
def test_gpu_job_kueue_does_not_admit_falls_back_on_quota(policy, waited, falls_back):
    """Kueue keeps the GPU Job suspended (quota used up) past gpuPendingTimeout: auto moves to the CPU."""
    plan = decide(make_world().spec(queueName="team-a").device(policy=policy, gpuPendingTimeout="30s")
                  .status(jobName=FIRST, device="gpu")
                  .job(job_body(FIRST, suspend=True, suspended_for=waited)).obj())
    if falls_back:
        assert plan.actions == [CreateJob(RERUN, "cpu", 2, "GpuQuotaExhausted"), DeleteJob(FIRST)]
        assert plan.outcome.fallback[0] == "GpuQuotaExhausted" and "team-a" in plan.outcome.fallback[1]
    else:
        assert plan.actions == [] and plan.outcome.reason == "Queued"
        if policy == "auto":
            assert 0 < plan.requeue_after <= 30 - waited + 1


def test_suspended_cpu_rerun_is_never_moved_again():
    plan = decide(make_world().spec(queueName="team-a").status(jobName=RERUN, device="cpu")
                  .job(job_body(RERUN, device="cpu", suspend=True, suspended_for=3600)).obj())
    assert plan.actions == [] and plan.outcome.reason == "Queued"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_final_phases_are_left_alone(phase):
    plan = decide(make_world().status(phase=phase, jobName=FIRST).obj())
    assert plan.outcome is None and plan.actions == []


# --- issue 25: why it waits, ETA and throughput, where the logs are kept --------------------------

def test_every_outcome_with_a_job_says_where_the_logs_are_kept():
    plan = decide(make_world().obj())
    output = plan.outcome.log_ref.removesuffix(".logs")
    assert plan.outcome.log_ref.endswith(".logs") and output
    running = decide(make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST)).pod(pod_body(FIRST)).obj())
    assert running.outcome.log_ref == plan.outcome.log_ref


def test_a_gpu_pod_waiting_says_why_and_when_it_moves_to_the_cpu():
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST))
                  .pod(pod_body(FIRST, phase="Pending", unschedulable_for=10,
                                unschedulable_message="0/4 nodes are available: 2 Insufficient nvidia.com/gpu."))
                  .obj())
    message = plan.outcome.message
    assert plan.outcome.reason == "Unschedulable" and "\n" not in message
    assert "Insufficient nvidia.com/gpu" in message and "moves to the CPU image at 20" in message
    assert "gpuPendingTimeout 300s" in message


def test_a_held_job_says_kueue_s_reason_and_is_looked_at_again():
    why = "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu"
    world = (make_world().spec(queueName="team-a").status(jobName=FIRST, device="gpu")
             .job(job_body(FIRST, suspend=True, suspended_for=5)).obj())
    from dataclasses import replace

    plan = decide(replace(world, queue_message=why))
    assert plan.outcome.reason == "Queued" and why in plan.outcome.message and "team-a" in plan.outcome.message
    assert "moves to the CPU image at" in plan.outcome.message
    assert plan.requeue_after is not None and plan.requeue_after <= 15


def test_running_status_carries_the_engine_s_rate_and_eta():
    maker = make_world().status(jobName=FIRST, device="gpu").job(job_body(FIRST))
    maker.pod(pod_body(FIRST, index=0, progress=json.dumps({"done": 30, "total": 50, "perSecond": 10.0,
                                                             "etaSeconds": 2.0})))
    maker.pod(pod_body(FIRST, index=1, progress=json.dumps({"done": 10, "total": 50, "perSecond": 5.0,
                                                             "etaSeconds": 8.0})))
    outcome = decide(maker.obj()).outcome
    assert outcome.per_second == 15.0 and outcome.eta_seconds == 8.0  # summed over shards; the slowest shard


def test_the_status_drops_the_eta_when_the_job_ends():
    from gpubatch_operator.state import Outcome, advance

    running, _ = advance({}, Outcome("Running", "Started", "m", job_name=FIRST, per_second=3.5, eta_seconds=41.6,
                                     log_ref="pvc://d/o.h5.logs"), generation=1, now="t")
    assert running["estimatedRemainingSeconds"] == 42 and running["throughputPerSecond"] == 3.5
    done, _ = advance(running, Outcome("Succeeded", "Completed", "m", job_name=FIRST, log_ref="pvc://d/o.h5.logs"),
                      generation=1, now="t")
    assert "estimatedRemainingSeconds" not in done and done["logRef"] == "pvc://d/o.h5.logs"

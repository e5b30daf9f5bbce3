"""TrainJob `workers: N` in the operator: the Indexed Job and headless Service it builds,
and the gang semantics decide() applies (one worker fails -> the whole group restarts as a
new attempt; bad input and an unusable GPU stay final; the GPU->CPU fallback moves the group)."""

from __future__ import annotations

import json

from gpubatch_jobs.contract import WORKER_PORT
from gpubatch_operator.builders import build_worker_service
from gpubatch_operator.decide import CreateJob, DeleteJob, decide
from gpubatch_operator.rbac import OPERATOR_RBAC
from tests.operator.helpers import job_body, make_job, make_world, pod_body

FIRST, RERUN = "x-train", "x-train-cpu"


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def env(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def group_world(**spec):
    return make_world("x", "TrainJob").spec(workers=2, **spec)


def test_workers_make_an_indexed_job_that_never_retries_a_single_pod():
    maker = make_job("x", "TrainJob").set(workers=3, batchSize=96, backoffLimit=4)
    job = maker.obj()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (3, 3, "Indexed")
    assert spec["backoffLimit"] == 0  # the operator restarts the whole group instead
    assert [r["action"] for r in spec["podFailurePolicy"]["rules"]] == ["FailJob"]
    assert pod["subdomain"] == "x-workers"
    hosts = env(job)["GPUBATCH_WORKER_HOSTS"].split(",")
    assert hosts == [f"x-train-{i}.x-workers:{WORKER_PORT}" for i in range(3)]
    assert container(job)["ports"] == [{"name": "worker", "containerPort": WORKER_PORT, "protocol": "TCP"}]
    assert json.loads(env(job)["GPUBATCH_SPEC"])["workers"] == 3


def test_one_worker_is_the_plain_job_as_before():
    job = make_job("x", "TrainJob").obj()
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    assert "GPUBATCH_WORKER_HOSTS" not in env(job)


def test_queue_label_goes_on_the_indexed_job_so_kueue_admits_the_group_as_one():
    job = make_job("x", "TrainJob").set(workers=2).queue("team-a").obj()
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True and job["spec"]["parallelism"] == 2


def test_headless_service_owned_by_the_trainjob_selects_its_pods():
    request = make_job("x", "TrainJob").set(workers=2).request()
    service = build_worker_service(request)
    assert service["metadata"]["name"] == "x-workers"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"gpubatch.dev/owner-uid": request.uid}
    owner = service["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainJob", request.uid, True)
    assert ("", "services", ("get", "create")) in OPERATOR_RBAC


def test_the_restart_names_the_worker_that_failed_first_not_the_peer_that_failed_after_it():
    """Worker 1 is killed; worker 0's collective call then fails (exit 2) a few seconds later."""
    failed = job_body(FIRST, kind="TrainJob", device="cpu", conditions={"Failed": ("PodFailurePolicy", "x")})
    world = (group_world(backoffLimit=2).status(jobName=FIRST, device="cpu").job(failed)
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=2, index=0, finished_ago=2))
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=137, index=1, finished_ago=5)))
    plan = decide(world.obj())
    assert plan.outcome.reason == "GroupRestarting"
    assert "worker 1" in plan.outcome.message and "exited 137" in plan.outcome.message
    # finishedAt has whole seconds: within the same one, the worker killed by a signal is the cause.
    same = (group_world(backoffLimit=2).status(jobName=FIRST, device="cpu").job(failed)
            .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=2, index=0, finished_ago=3))
            .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=137, index=1, finished_ago=3)))
    assert "worker 1" in decide(same.obj()).outcome.message


def test_a_failed_worker_restarts_the_whole_group_as_a_new_attempt():
    failed = job_body(FIRST, kind="TrainJob", device="cpu", conditions={"Failed": ("PodFailurePolicy", "x")})
    world = (group_world(backoffLimit=2).status(jobName=FIRST, device="cpu").job(failed)
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=137, index=1))
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=143, index=0)))
    plan = decide(world.obj())
    assert plan.actions == [DeleteJob(FIRST, propagation="Foreground")]
    assert plan.outcome.phase == "Pending" and plan.outcome.reason == "GroupRestarting"
    assert "worker 1" in plan.outcome.message and "exited 137" in plan.outcome.message
    assert plan.outcome.workers["groupRestarts"] == 1 and plan.outcome.attempts == 2
    # Once the old Job (and its pods) are gone, the same Job is created again for attempt 2.
    again = decide(group_world(backoffLimit=2).status(
        jobName=FIRST, device="cpu", phase="Pending",
        workers={"ready": 0, "total": 2, "groupRestarts": 1}).obj())
    assert again.actions == [CreateJob(FIRST, "cpu", 2)]
    assert again.outcome.workers == {"ready": 0, "total": 2, "perWorkerBatchSize": 32, "groupRestarts": 1}


def test_restarts_stop_at_backoff_limit():
    failed = job_body(FIRST, kind="TrainJob", device="cpu", conditions={"Failed": ("PodFailurePolicy", "x")})
    world = (group_world(backoffLimit=1).job(failed)
             .status(jobName=FIRST, device="cpu", workers={"ready": 0, "total": 2, "groupRestarts": 1})
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=2, index=1)))
    plan = decide(world.obj())
    assert plan.actions == [] and plan.outcome.phase == "Failed"


def test_bad_input_is_not_restarted():
    failed = job_body(FIRST, kind="TrainJob", device="cpu", conditions={"Failed": ("PodFailurePolicy", "x")})
    world = (group_world().status(jobName=FIRST, device="cpu").job(failed)
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=1, index=0,
                           message=json.dumps({"ok": False, "message": "column y missing"}))))
    plan = decide(world.obj())
    assert plan.actions == [] and plan.outcome.phase == "Failed" and plan.outcome.reason == "BadInput"


def test_gpu_fallback_moves_the_whole_group():
    failed = job_body(FIRST, kind="TrainJob", device="gpu", conditions={"Failed": ("PodFailurePolicy", "x")})
    world = (group_world().status(jobName=FIRST, device="gpu").job(failed)
             .pod(pod_body(FIRST, kind="TrainJob", phase="Failed", exit_code=75, index=1)))
    plan = decide(world.obj())
    assert plan.actions == [CreateJob(RERUN, "cpu", 2, "GpuUnusable"), DeleteJob(FIRST)]
    rerun = make_job("x", "TrainJob").set(workers=2).cpu().obj()
    assert rerun["spec"]["parallelism"] == 2  # one Job, one device: never a mix


def test_status_shows_ready_workers_progress_and_result_of_worker_0():
    running = (group_world().status(jobName=FIRST, device="cpu").job(job_body(FIRST, kind="TrainJob", device="cpu"))
               .pod(pod_body(FIRST, kind="TrainJob", index=0, progress='{"done": 30, "total": 100}'))
               .pod(pod_body(FIRST, kind="TrainJob", index=1, phase="Pending", progress='{"done": 0, "total": 100}')))
    plan = decide(running.obj())
    assert plan.outcome.workers == {"ready": 1, "total": 2, "perWorkerBatchSize": 32, "groupRestarts": 0}
    assert plan.outcome.progress == "30%"
    done = (group_world().status(jobName=FIRST, device="cpu")
            .job(job_body(FIRST, kind="TrainJob", device="cpu", conditions={"Complete": ("", "")}))
            .pod(pod_body(FIRST, kind="TrainJob", index=1, phase="Succeeded", exit_code=0,
                          message=json.dumps({"ok": True, "published": False})))
            .pod(pod_body(FIRST, kind="TrainJob", index=0, phase="Succeeded", exit_code=0,
                          message=json.dumps({"ok": True, "workers": {"total": 2}}))))
    plan = decide(done.obj())
    assert plan.outcome.phase == "Succeeded" and plan.outcome.result == {"ok": True, "workers": {"total": 2}}


def test_unschedulable_gpu_group_moves_to_the_cpu_whole():
    """One worker pod waiting for a GPU past gpuPendingTimeout moves the whole group (auto)."""
    world = (group_world().device(policy="auto", gpuPendingTimeout="5s").status(jobName=FIRST, device="gpu")
             .job(job_body(FIRST, kind="TrainJob", device="gpu"))
             .pod(pod_body(FIRST, kind="TrainJob", index=0))
             .pod(pod_body(FIRST, kind="TrainJob", index=1, phase="Pending", unschedulable_for=10)))
    plan = decide(world.obj())
    assert plan.actions == [CreateJob(RERUN, "cpu", 2, "GpuUnschedulable"), DeleteJob(FIRST)]

"""Issue 14's lifecycle bugs, one test (or table) each; every test failed before its fix.

1. an unexpected exception was reported as bad input (exit 1, never retried);
2. a resource with a long name never saw its Job (children keyed by a shortened label);
3. spec edits were accepted and ignored (see test_crds_refuse_spec_edits and tests/operator);
4. RBAC was cached for ever (tests/operator/test_lifecycle.py, on the cluster);
5. the exit code was parsed from the Job controller's English message.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpubatch_jobs import contract, execute
from gpubatch_jobs.contract import DeviceInstruction
from gpubatch_jobs.kinds import KindPlugin
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec import parse_spec
from gpubatch_operator.decide import CreateJob, decide, iso
from gpubatch_operator.handlers.lifecycle import OperatorContext
from gpubatch_operator.handlers.watch_events import job_event, pod_event, resource_event
from gpubatch_operator.reconciler import Reconciler
from gpubatch_operator.settings import Settings
from gpubatch_operator.store import Store
from tests.operator.helpers import (
    BASE_SPECS,
    UID,
    job_body,
    make_job,
    make_world,
    pod_body,
    resource,
)

# --- 1. unexpected errors ----------------------------------------------------------------------------


def run_failing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, err: BaseException,
                instruction: DeviceInstruction | None) -> tuple[int, dict]:
    def engine(plugin, spec, ctx):  # type: ignore[no-untyped-def]
        raise err

    monkeypatch.setattr(KindPlugin, "run", engine)
    log = tmp_path / "termination-log"
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(log))
    spec = parse_spec("RenderJob", BASE_SPECS["RenderJob"])
    code = execute.execute("RenderJob", spec, RunContext(base_dir=tmp_path, instruction=instruction),
                           termination_log=True)
    return code, json.loads(log.read_text())


@pytest.mark.parametrize("err", [OSError(28, "No space left on device"), RuntimeError("a bug"), KeyError("x")])
def test_an_unexpected_error_is_retried_not_bad_input(monkeypatch, tmp_path, err) -> None:
    code, summary = run_failing(monkeypatch, tmp_path, err, DeviceInstruction("cpu"))
    assert code == contract.EXIT_UNEXPECTED and code not in contract.FAIL_AT_ONCE
    assert summary["reason"] == "UnexpectedError" and type(err).__name__ in summary["message"]


@pytest.mark.parametrize("message", [
    "CUDA error: an illegal memory access was encountered",
    "INTERNAL: Failed to launch CUDA kernel: CUDA_ERROR_LAUNCH_FAILED",
    "cuDNN launch failure : input shape ([1,64,50])",
    "CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm",
])
def test_a_gpu_failing_mid_run_exits_75_so_the_cpu_rerun_happens(monkeypatch, tmp_path, message) -> None:
    code, summary = run_failing(monkeypatch, tmp_path, RuntimeError(message), DeviceInstruction("gpu"))
    assert code == contract.EXIT_GPU_UNUSABLE and summary["reason"] == "GpuFailed"
    # The same error on the CPU is no GPU failure: retried.
    assert run_failing(monkeypatch, tmp_path, RuntimeError(message), DeviceInstruction("cpu"))[0] == 2


def test_gpu_out_of_memory_left_over_is_retried_not_a_gpu_failure(monkeypatch, tmp_path) -> None:
    err = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert run_failing(monkeypatch, tmp_path, err, DeviceInstruction("gpu"))[0] == contract.EXIT_UNEXPECTED


# --- 2. long names -------------------------------------------------------------------------------------


def test_a_200_character_name_sees_its_job_and_pods() -> None:
    name = "a" * 200
    settings = Settings()
    runtime = OperatorContext(settings, store := Store(), Reconciler(settings=settings, store=store, client=None))  # type: ignore[arg-type]
    body = resource("RenderJob", name)
    resource_event(runtime, "ADDED", body)
    key = ("RenderJob", "ns", name)
    job = make_job(name).cpu().obj()
    job["metadata"]["uid"] = f"job-uid-{job['metadata']['name']}"  # pod_body's owner reference names it
    job_event(runtime, "ADDED", job)
    pod = pod_body(job["metadata"]["name"], owner=name)
    pod["metadata"]["labels"] = {**job["spec"]["template"]["metadata"]["labels"],
                                 "job-name": job["metadata"]["name"]}
    pod_event(runtime, "ADDED", pod)
    jobs, pods = store.children(store.resources[key].uid)
    assert [j.name for j in jobs] == [job["metadata"]["name"]] and len(pods) == 1
    assert len(runtime.reconciler.queue) == 1  # the one resource, enqueued (not a key nobody has)


# --- 5. the exit code comes from the pod ----------------------------------------------------------------

FIRST, RERUN = "x-render", "x-render-cpu"


def test_the_job_controllers_message_is_not_parsed_for_an_exit_code() -> None:
    failed = job_body(FIRST, conditions={"Failed": ("PodFailurePolicy",
                      "Container main for pod ns/x-render-0 failed with exit code 75 matching FailJob rule at index 0")})
    failed["status"]["conditions"][0]["lastTransitionTime"] = iso(time.time())
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(failed).obj())
    assert not any(isinstance(a, CreateJob) for a in plan.actions)  # no fallback on words
    assert plan.outcome is None and plan.requeue_after is not None  # waits for the pod's status


def test_the_exit_code_is_read_from_the_pods_container_status() -> None:
    failed = job_body(FIRST, conditions={"Failed": ("PodFailurePolicy", "Der Container ist fehlgeschlagen")})
    pod = pod_body(FIRST, phase="Failed", exit_code=75, message="")
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(failed).pod(pod).obj())
    assert plan.actions[0] == CreateJob(RERUN, "cpu", 2, "GpuUnusable")


def test_a_failed_job_whose_pod_never_shows_fails_after_a_grace_period_with_the_message_for_people() -> None:
    failed = job_body(FIRST, conditions={"Failed": ("BackoffLimitExceeded", "Job has reached the specified backoff limit")})
    failed["status"]["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    plan = decide(make_world().status(jobName=FIRST, device="gpu").job(failed).obj())
    assert plan.outcome is not None and plan.outcome.phase == "Failed"
    assert plan.outcome.reason == "BackoffLimitExceeded" and "backoff limit" in plan.outcome.message
    assert UID  # the helpers' resource


def test_a_resource_recreated_under_the_same_name_does_not_inherit_the_old_jobs() -> None:
    store = Store()
    old = resource("RenderJob", "x")
    store.put_resource(old)
    job = make_job("x").cpu().obj()
    store.put_job(job)
    new = resource("RenderJob", "x")
    new["metadata"]["uid"] = "another-uid"
    store.put_resource(old, deleted=True)
    store.put_resource(new)
    assert store.children("another-uid") == ([], [])
    assert store.owner(UID) is None and store.owner("another-uid") == ("RenderJob", "ns", "x")

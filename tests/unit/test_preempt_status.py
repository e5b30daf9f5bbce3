"""Preemption in the operator: the grace period the pods get, and status.checkpoint / status.preemptions.

The pod reports its checkpoints (and that it was stopped by SIGTERM after saving)
in its progress annotation; the operator copies a checked subset into status,
keeps it once the pod is gone, and counts each preempted pod once.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpubatch_jobs.crds import crd_for
from gpubatch_jobs.spec import SpecError, parse_spec
from gpubatch_operator.decide import decide
from gpubatch_operator.observe import PodView, parse_checkpoint
from gpubatch_operator.settings import Settings, SettingsError
from gpubatch_operator.state import advance
from tests.operator.helpers import job_body, make_job, make_world, pod_body

FIRST = "x-train"
CHECKPOINT = {"epoch": 2, "step": 120, "time": "2026-12-03T09:00:00Z", "place": "/mnt/pvc/data/m/checkpoints/x"}


def _annotation(checkpoint: dict | None = None, *, preempted: bool = False) -> str:
    event: dict = {"done": 10, "total": 100, "stage": "epoch 3/5"}
    if checkpoint is not None:
        event["checkpoint"] = checkpoint
    if preempted:
        event["preempted"] = True
    return json.dumps(event)


def test_the_annotation_yields_only_known_bounded_fields():
    text = json.dumps({"done": 1, "total": 2, "preempted": True, "checkpoint": {
        **CHECKPOINT, "place": "p" * 5000, "token": "secret", "step": "12", "epoch": True}})
    checkpoint, preempted = parse_checkpoint(text)
    assert preempted is True
    assert checkpoint == {"time": CHECKPOINT["time"], "place": "p" * 1024}
    assert parse_checkpoint("not json") == (None, False)
    assert parse_checkpoint(json.dumps({"preempted": "yes", "checkpoint": [1]})) == (None, False)


def _world(*pods: dict, status: dict | None = None):
    maker = make_world(kind="TrainJob").status(**(status or {"jobName": FIRST, "device": "cpu", "phase": "Running"}))
    maker.job(job_body(FIRST, kind="TrainJob"))
    for pod in pods:
        maker.pod(pod)
    return maker.obj()


def _step(world) -> dict:
    plan = decide(world)
    new, _ = advance(world.status, plan.outcome, generation=1, now="2026-12-03T09:00:01Z")
    return new


def test_a_preempted_pod_is_counted_once_and_its_checkpoint_kept_after_it_is_gone():
    victim = pod_body(FIRST, kind="TrainJob", progress=_annotation(CHECKPOINT, preempted=True))
    status = _step(_world(victim))
    assert status["checkpoint"] == CHECKPOINT
    assert status["preemptions"] == 1 and status["preemptedPods"] == [f"{FIRST}-0-abcde"]
    assert status["progress"] == "10%"

    again = _step(_world(victim, status=status))  # the same pod seen again: not counted twice
    assert again["preemptions"] == 1

    gone = _step(_world(status=again))  # Kueue suspended the Job: the pod is gone
    assert gone["checkpoint"] == CHECKPOINT and gone["preemptions"] == 1
    assert gone["progress"] == "10%", "progress must not drop while no pod reports"

    later = {**CHECKPOINT, "epoch": 3, "step": 0, "time": "2026-12-03T09:05:00Z"}
    successor = pod_body(FIRST, kind="TrainJob", progress=_annotation(later))
    successor["metadata"]["name"] = f"{FIRST}-0-fghij"
    resumed = _step(_world(successor, status=gone))
    assert resumed["checkpoint"] == later and resumed["preemptions"] == 1


def test_a_pod_that_was_not_preempted_counts_nothing():
    status = _step(_world(pod_body(FIRST, kind="TrainJob", progress=_annotation(CHECKPOINT))))
    assert status["checkpoint"] == CHECKPOINT
    assert "preemptions" not in status


def test_pod_view_reads_the_checkpoint():
    view = PodView.parse(pod_body(FIRST, kind="TrainJob", progress=_annotation(CHECKPOINT, preempted=True)))
    assert view.checkpoint == CHECKPOINT and view.preempted and view.progress == (10, 100)


@pytest.mark.parametrize(("given", "default", "want"), [(None, 60, 60), (None, 15, 15), (300, 60, 300)])
def test_the_grace_period_comes_from_the_spec_else_the_operator_default(given, default, want):
    maker = make_job("x", kind="TrainJob").cpu().settings(default_termination_grace_s=default)
    if given is not None:
        maker.set(terminationGracePeriodSeconds=given)
    assert maker.obj()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == want


def test_grace_period_setting_and_spec_field_are_checked():
    assert Settings.from_env({}).default_termination_grace_s == 60
    assert Settings.from_env({"GPUBATCH_DEFAULT_TERMINATION_GRACE_SECONDS": "120"}).default_termination_grace_s == 120
    with pytest.raises(SettingsError, match="GPUBATCH_DEFAULT_TERMINATION_GRACE_SECONDS"):
        Settings.from_env({"GPUBATCH_DEFAULT_TERMINATION_GRACE_SECONDS": "0"})
    body = {"input": {"path": "x.csv"}, "output": {"path": "out"}, "terminationGracePeriodSeconds": 0}
    with pytest.raises(SpecError, match="terminationGracePeriodSeconds"):
        parse_spec("TrainJob", body)


def test_kubectl_get_shows_preemptions():
    columns = crd_for("TrainJob")["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {"name": "Preempted", "type": "integer", "jsonPath": ".status.preemptions"}.items() <= next(
        c for c in columns if c["name"] == "Preempted").items()
    status = crd_for("PredictJob")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert set(status["properties"]["checkpoint"]["properties"]) == {"epoch", "step", "done", "time", "place"}


def test_priority_class_becomes_kueues_label():
    job = make_job("x", kind="TrainJob").cpu().queue("team-a").set(priorityClass="low").obj()
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "low"
    assert "kueue.x-k8s.io/priority-class" not in make_job("x", kind="TrainJob").cpu().obj()["metadata"]["labels"]


def test_a_preempted_pod_deleted_before_any_reconcile_still_counts():
    """Kueue's preemption deletes the pod a second after it saved its work: the store keeps it."""
    from gpubatch_operator.store import Store

    store = Store()
    body = pod_body(FIRST, kind="TrainJob", progress=_annotation(CHECKPOINT, preempted=True))
    uid = store.put_job(job_body(FIRST, kind="TrainJob"))  # pods are ours through their Job
    assert store.put_pod(body) == uid
    store.put_pod(body, deleted=True)
    jobs, pods = store.children(uid)
    assert pods == []
    (ghost,) = store.departed_pods(uid)
    maker = make_world(kind="TrainJob").status(jobName=FIRST, device="cpu", phase="Running")
    maker.job(job_body(FIRST, kind="TrainJob", suspend=True))
    world = maker.obj()
    world = dataclasses.replace(world, departed=[ghost])
    new = _step(world)
    assert new["preemptions"] == 1 and new["checkpoint"] == CHECKPOINT
    assert new["phase"] == "Pending"  # a departed pod never makes the job look running
    store.put_pod(pod_body(FIRST, kind="TrainJob"), deleted=True)  # a plain pod leaves nothing behind
    assert len(store.departed_pods(uid)) == 1

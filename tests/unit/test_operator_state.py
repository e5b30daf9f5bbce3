"""The status state machine: allowed moves, conditions, transitions."""

from __future__ import annotations

import pytest

from gpubatch_operator.state import Outcome, advance, allowed, merge_patch, only_progress_changed

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (None, "Pending", True), (None, "Running", False), ("Pending", "Running", True),
        ("Running", "Pending", True), ("Running", "Succeeded", True), ("Succeeded", "Failed", False),
        ("Failed", "Running", False), ("Pending", "Failed", True),
    ],
)
def test_allowed_moves(old, new, ok):
    assert allowed(old, new) is ok


def created() -> Outcome:
    return Outcome("Pending", "JobCreated", "made", device="gpu", job_name="x-render", attempts=1)


def test_first_status_has_job_created_and_one_transition():
    status, transitions = advance({}, created(), generation=3, now=T0)
    assert status["phase"] == "Pending" and status["observedGeneration"] == 3
    assert [c["type"] for c in status["conditions"]] == ["JobCreated"]
    assert [t.condition for t in transitions] == ["JobCreated"]


def test_unchanged_condition_keeps_its_transition_time_and_posts_nothing():
    first, _ = advance({}, created(), generation=1, now=T0)
    again, transitions = advance(first, created(), generation=1, now=T1)
    assert again == first and transitions == []


def test_running_then_succeeded():
    status, _ = advance({}, created(), generation=1, now=T0)
    status, t1 = advance(status, Outcome("Running", "Started", "running", device="gpu", job_name="x-render",
                                         start_time=T0), generation=1, now=T0)
    status, t2 = advance(status, Outcome("Succeeded", "Completed", "done", device="gpu", job_name="x-render",
                                         result={"ok": True}, completion_time=T1), generation=1, now=T1)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Running"]["status"] == "False" and conditions["Succeeded"]["status"] == "True"
    assert [t.condition for t in t1 + t2] == ["Running", "Succeeded"]
    assert status["result"] == {"ok": True} and status["completionTime"] == T1 and status["startTime"] == T0


@pytest.mark.parametrize("old", [{}, {"observedGeneration": 1}])
def test_a_first_write_after_the_job_finished_lands_in_succeeded(old):
    """The first status write waited out a burst (or the operator was killed first) and the
    Job completed meanwhile: it goes straight to Succeeded, with both Events."""
    status, transitions = advance(old, Outcome("Succeeded", "Completed", "done", device="cpu", job_name="x-render",
                                               attempts=1, completion_time=T1), generation=1, now=T1)
    assert status["phase"] == "Succeeded" and status["jobName"] == "x-render"
    assert [t.condition for t in transitions] == ["JobCreated", "Succeeded"]


def test_no_job_no_jump():
    status, transitions = advance({}, Outcome("Running", "Started", "running"), generation=2, now=T0)
    assert status == {"observedGeneration": 2} and transitions == []


def test_fallback_is_a_warning_transition():
    status, _ = advance({}, created(), generation=1, now=T0)
    status, transitions = advance(status, Outcome("Pending", "FellBackToCPU", "m", device="cpu",
                                  job_name="x-render-cpu", attempts=2, fallback=("GpuUnschedulable", "why")),
                                  generation=1, now=T1)
    assert status["device"] == "cpu" and status["attempts"] == 2
    assert [(t.condition, t.reason, t.warning) for t in transitions] == [("FellBackToCPU", "GpuUnschedulable", True)]


def test_final_phase_is_never_left():
    done = {"phase": "Succeeded", "conditions": []}
    status, transitions = advance(done, Outcome("Failed", "x", "y"), generation=2, now=T1)
    assert status["phase"] == "Succeeded" and transitions == [] and status["observedGeneration"] == 2


def test_merge_patch_nulls_removed_keys():
    assert merge_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}


def test_progress_only_changes_are_recognised():
    assert only_progress_changed({"phase": "Running", "progress": "1%"}, {"phase": "Running", "progress": "2%"})
    assert not only_progress_changed({"phase": "Running"}, {"phase": "Succeeded"})

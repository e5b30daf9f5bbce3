"""Why Kueue holds a Job: one line from its Workload's conditions (operator/queue_reason.py)."""

from __future__ import annotations

from gpubatch_operator.queue_reason import waiting_reason


def test_quota_reserved_false_gives_kueue_s_words_on_one_line():
    workload = {"status": {"conditions": [
        {"type": "QuotaReserved", "status": "False", "reason": "Pending",
         "message": "couldn't assign flavors to pod set main:\n insufficient unused quota for nvidia.com/gpu in "
                    "flavor gpu, 1 more needed"}]}}
    assert waiting_reason(workload) == ("couldn't assign flavors to pod set main: insufficient unused quota for "
                                        "nvidia.com/gpu in flavor gpu, 1 more needed")


def test_an_admitted_workload_has_no_waiting_reason():
    workload = {"status": {"conditions": [{"type": "QuotaReserved", "status": "True", "message": "Quota reserved"},
                                          {"type": "Admitted", "status": "True", "message": "admitted"}]}}
    assert waiting_reason(workload) is None
    assert waiting_reason({}) is None


def test_an_evicted_workload_says_why():
    workload = {"status": {"conditions": [{"type": "Evicted", "status": "True",
                                           "message": "Preempted to accommodate a higher priority Workload"}]}}
    assert "Preempted" in (waiting_reason(workload) or "")
